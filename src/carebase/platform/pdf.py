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
