"""Render the top-level index.ipynb into README.md, offline (nbdev_readme needs Quarto, which is not available here).

Cells go through nbdev's own processors, so `#| hide` cells, `#| export` cells and `#| hide_line` lines stay out of
the README exactly as they would in nbdev's rendering. Markdown cells are copied; code cells become Python blocks,
followed by their text output when the notebook holds any.

    python .ci/render_readme.py           # write README.md
    python .ci/render_readme.py --check   # exit 1 when README.md is stale
"""
import sys
from pathlib import Path
from nbdev.processors import NBProcessor, rm_export, hide_line, strip_ansi, rm_header_dash

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from index.ipynb by `python .ci/render_readme.py`: edit the notebook, not this file. -->\n\n"

def _text(x): return "".join(x) if isinstance(x, list) else (x or "")

def render(nb_path: Path = ROOT/"index.ipynb") -> str:
    proc = NBProcessor(nb_path, procs=[rm_export, hide_line, strip_ansi, rm_header_dash])
    proc.process()
    parts = []
    for cell in proc.nb.cells:
        src = _text(cell.get("source")).strip()
        if not src: continue
        if cell.cell_type == "markdown": parts.append(src)
        elif cell.cell_type == "code":
            src = "\n".join(l for l in src.splitlines() if not l.startswith("#|")).strip()
            if not src: continue
            parts.append(f"```python\n{src}\n```")
            out = []
            for o in cell.get("outputs", []):
                if o.get("output_type") == "stream": out.append(_text(o.get("text")))
                elif "text/plain" in o.get("data", {}) and len(o["data"]) == 1: out.append(_text(o["data"]["text/plain"]))
            if "".join(out).strip(): parts.append("```\n" + "".join(out).rstrip() + "\n```")
    return HEADER + "\n\n".join(parts) + "\n"

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    md, readme = render(), ROOT/"README.md"
    if "--check" in argv:
        if not readme.exists() or readme.read_text(encoding="utf-8") != md:
            print("README.md is stale: run `python .ci/render_readme.py` and commit it."); return 1
        print("README.md matches index.ipynb."); return 0
    readme.write_text(md, encoding="utf-8"); print(f"wrote {readme.relative_to(ROOT)}"); return 0

if __name__ == "__main__": sys.exit(main())
