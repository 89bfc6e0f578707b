"""Draw Duet's icon set with Pillow: ``python assets/make_icons.py`` (writes assets/icons/).

The icon is drawn once at 1024 px and downsampled (Lanczos) to every size, which gives clean
anti-aliasing without a vector toolchain: a speech bubble (Duet speaks up) holding an eye (it
watches), on a rounded blue square. Outputs: duet-<size>.png for the sizes in
``app.core.assets.ICON_SIZES``, duet.ico (Windows: 16–256) and duet.icns (macOS), all from Pillow's
own writers. Re-running it is deterministic, so the committed files can be checked against it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from app.core.assets import ICON_SIZES  # noqa: E402

BIG = 1024
BG_TOP, BG_BOTTOM = (41, 98, 180), (18, 44, 92)
BUBBLE = (250, 250, 252)
IRIS, PUPIL = (32, 178, 170), (16, 24, 40)


def draw(size: int = BIG) -> Image.Image:
    s = size / 1024
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    # Background: a vertical gradient clipped to a rounded square.
    grad = Image.new("RGBA", (size, size))
    gd = ImageDraw.Draw(grad)
    for y in range(size):
        t = y / max(1, size - 1)
        gd.line([(0, y), (size, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(BG_TOP, BG_BOTTOM)) + (255,))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rounded_rectangle([40 * s, 40 * s, 984 * s, 984 * s], radius=220 * s, fill=255)
    img.paste(grad, (0, 0), mask)
    d = ImageDraw.Draw(img)
    # Speech bubble: a wide ellipse with a tail at the bottom left.
    d.ellipse([150 * s, 210 * s, 874 * s, 740 * s], fill=BUBBLE)
    d.polygon([(270 * s, 620 * s), (200 * s, 860 * s), (440 * s, 700 * s)], fill=BUBBLE)
    # Eye inside the bubble: almond outline (two circle arcs' intersection), iris, pupil, highlight.
    eye = Image.new("L", (size, size), 0)
    ed = ImageDraw.Draw(eye)
    ed.ellipse([270 * s, 300 * s, 754 * s, 650 * s], fill=255)
    white = Image.new("L", (size, size), 0)
    ImageDraw.Draw(white).ellipse([300 * s, 330 * s, 724 * s, 620 * s], fill=255)
    ring = Image.new("RGBA", (size, size), PUPIL + (255,))
    img.paste(ring, (0, 0), eye)
    img.paste(Image.new("RGBA", (size, size), BUBBLE + (255,)), (0, 0), white)
    d = ImageDraw.Draw(img)
    d.ellipse([412 * s, 375 * s, 612 * s, 575 * s], fill=IRIS)
    d.ellipse([467 * s, 430 * s, 557 * s, 520 * s], fill=PUPIL)
    d.ellipse([530 * s, 405 * s, 570 * s, 445 * s], fill=BUBBLE)
    return img


def main(out: Path = HERE / "icons") -> None:
    out.mkdir(parents=True, exist_ok=True)
    big = draw()
    for n in ICON_SIZES:
        big.resize((n, n), Image.LANCZOS).save(out / f"duet-{n}.png", optimize=True)
    big.resize((256, 256), Image.LANCZOS).save(out / "duet.ico", sizes=[(n, n) for n in (16, 24, 32, 48, 64, 128, 256)])
    big.save(out / "duet.icns")
    print(f"wrote {len(ICON_SIZES)} PNGs, duet.ico and duet.icns to {out}")


if __name__ == "__main__":
    main()
