"""MkDocs hook: ``<!-- methods-table -->`` in a page becomes the table of registered methods,
read from ``inr_codecs.registry`` when the site is built (so the docs list what the code has)."""
MARKER = "<!-- methods-table -->"


def methods_table() -> str:
    from inr_codecs import registry
    lines = ["| method id | `--codec` | Zarr v2 codec | Zarr v3 serializer | metadata name | paper preset |",
             "|---|---|---|---|---|---|"]
    for m in registry.codecs():
        preset = f"`{m.codec.__name__}.paper(ratio)`" if m.codec.paper_settings is not None else "–"
        lines.append(f"| {m.id} | `{m.name}` | `{m.codec.__name__}` | `{m.serializer_name}` | "
                     f"`{m.codec_id}` | {preset} |")
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown, **kwargs):
    return markdown.replace(MARKER, methods_table()) if MARKER in markdown else markdown
