"""Cases shared by the engine's unit tests and the SDK tests of picture processing."""

from __future__ import annotations

# The spec's thumbnail forms on a 1200x800 input (image-processing.md 3.2): rule -> output size.
THUMBNAIL_TABLE = [
    ("imageMogr2/thumbnail/!50p", (600, 400)),
    ("imageMogr2/thumbnail/!33p", (396, 264)),
    ("imageMogr2/thumbnail/!200p", (2400, 1600)),
    ("imageMogr2/thumbnail/!50px", (600, 800)),
    ("imageMogr2/thumbnail/!x50p", (1200, 400)),
    ("imageMogr2/thumbnail/600x", (600, 400)),
    ("imageMogr2/thumbnail/1800x", (1800, 1200)),
    ("imageMogr2/thumbnail/x400", (600, 400)),
    ("imageMogr2/thumbnail/600x600", (600, 400)),
    ("imageMogr2/thumbnail/900x300", (450, 300)),
    ("imageMogr2/thumbnail/!600x600r", (900, 600)),
    ("imageMogr2/thumbnail/600x600^", (900, 600)),
    ("imageMogr2/thumbnail/600x600!", (600, 600)),
    ("imageMogr2/thumbnail/600x600>", (600, 400)),
    ("imageMogr2/thumbnail/1500x1000>", (1200, 800)),
    ("imageMogr2/thumbnail/1500x600>", (900, 600)),
    ("imageMogr2/thumbnail/2400x2400<", (2400, 1600)),
    ("imageMogr2/thumbnail/600x600<", (1200, 800)),
    ("imageMogr2/thumbnail/1500x600<", (1200, 800)),
    ("imageMogr2/thumbnail/240000@", (600, 400)),
    ("imageMogr2/thumbnail/500000@", (866, 577)),
    ("imageMogr2/thumbnail/2000000@", (1732, 1154)),
    ("imageMogr2/thumbnail/600x600/pad/1", (600, 600)),
    ("imageMogr2/thumbnail/!50p|imageMogr2/thumbnail/!50p", (300, 200)),
]
