"""What every PDF Carebase prints shares: fpdf2's core fonts show windows-1252 only, so text is
folded to it (ł → l, accents dropped where the letter has no accented form there, "?" as a last
resort), and the caller learns whether anything was lost so the document can say so."""

from __future__ import annotations

import unicodedata

PDF_ENCODING = "windows-1252"
_FOLD = {"ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ħ": "h", "Ħ": "H", "ı": "i", "ŀ": "l", "Ŀ": "L",
         "ŋ": "ng", "Ŋ": "NG", "ŧ": "t", "Ŧ": "T", "ſ": "s", "−": "-", "‐": "-", "‑": "-", "→": "->"}


def _encodable(text: str) -> bool:
    try:
        text.encode(PDF_ENCODING)
        return True
    except UnicodeEncodeError:
        return False


class FoldedText:
    """Folds text to what the PDF's font can show, and remembers whether anything was lost."""

    def __init__(self) -> None:
        self.folded = False
        self.lost = False

    def __call__(self, value: object) -> str:
        text = "" if value is None else str(value)
        if _encodable(text):
            return text
        out = []
        for ch in text:
            if _encodable(ch):
                out.append(ch)
                continue
            base = _FOLD.get(ch) or "".join(c for c in unicodedata.normalize("NFKD", ch)
                                            if not unicodedata.combining(c))
            if base and _encodable(base):
                out.append(base)
                self.folded = True
            else:
                out.append("?")
                self.lost = True
        return "".join(out)


def render_statement(title: str, before: list[tuple[str, float, str]], rows: list[tuple[str, ...]],
                     widths: tuple[int, ...], after: list[tuple[str, float, str]]) -> bytes:
    """A one-page money document (an invoice, a receipt): lines of text (text, size, style) above
    and below a table whose first row is its header and whose last column is right-aligned
    (amounts)."""
    # Imported on first use: fpdf2 brings Pillow and fontTools, over a second to load.
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    t = FoldedText()
    pdf = FPDF(format="A4", unit="mm")
    pdf.core_fonts_encoding = PDF_ENCODING
    pdf.set_title(t(title))
    pdf.set_creator("Carebase")
    pdf.set_margins(18, 16, 18)
    pdf.add_page()

    def line(text: str, size: float, style: str) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(pdf.epw, size * 0.55, t(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    for text, size, style in before:
        line(text, size, style)
    pdf.ln(3)
    pdf.set_font("Helvetica", "", 9.5)
    align = tuple("LEFT" for _ in widths[:-1]) + ("RIGHT",)
    with pdf.table(col_widths=widths, line_height=6, text_align=align) as table:
        for cells in rows:
            r = table.row()
            for cell in cells:
                r.cell(t(cell))
    pdf.ln(4)
    for text, size, style in after:
        line(text, size, style)
    if t.lost:
        line("Some characters could not be printed in this font.", 8, "I")
    return bytes(pdf.output())
