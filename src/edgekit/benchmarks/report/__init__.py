"""The bench report: its rows (rows.py, read null-safely by fields.py) and every way to show them: console and
Markdown tables, the self-contained HTML page, and its plots."""
