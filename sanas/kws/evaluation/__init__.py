"""Scoring keyword spotters on streams (Matched / Correct / Wrong / FA, FA/h vs FR) and the
figures that show it."""
