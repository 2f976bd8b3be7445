#!/usr/bin/env python3
"""Renders the demo's text lines (demo/textlines/): 64 English text lines, half of them turned
by 180 degrees, for PP-OCR's text-direction classifier (class 0 = upright, 1 = rotated 180).

Deterministic: a fixed seed, fixed sentences (written for this project), DejaVu fonts
(/usr/share/fonts/truetype/dejavu, package fonts-dejavu-core) and Pillow. Run from the
repository root:  python3 scripts/make-demo-data.py
The output is committed; the package ships it, so users never run this.
"""
import os
import random

from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONTS = '/usr/share/fonts/truetype/dejavu'
FACES = ['DejaVuSans.ttf', 'DejaVuSerif.ttf', 'DejaVuSansMono.ttf', 'DejaVuSans-Bold.ttf', 'DejaVuSerif-Italic.ttf', 'DejaVuSansCondensed.ttf']
WORDS = (
    'model weight layer scale range error signal noise batch image text line table front budget cost memory '
    'search phase point curve report export runtime kernel engine value tensor channel width height shape '
    'accuracy label class sample data folder file result summary profile target bits cheap fast small large '
    'the of and to in for with on at by from each every one two four eight sixteen under over into after before'
).split()
OUT = os.path.join('demo', 'textlines')


def line(rng):
    n = rng.randint(2, 5)
    words = [rng.choice(WORDS) for _ in range(n)]
    if rng.random() < 0.4:
        words.insert(rng.randint(0, n), str(rng.randint(2, 2048)))
    s = ' '.join(words)
    return s.capitalize() if rng.random() < 0.6 else s


def render(rng, text):
    font = ImageFont.truetype(os.path.join(FONTS, rng.choice(FACES)), rng.randint(22, 30))
    l, t, r, b = font.getbbox(text)
    pad_x, pad_y = rng.randint(4, 12), rng.randint(4, 9)
    w, h = r - l + 2 * pad_x, b - t + 2 * pad_y
    bg = tuple(rng.randint(190, 250) for _ in range(3))
    fg = tuple(rng.randint(0, 70) for _ in range(3))
    img = Image.new('RGB', (w, h), bg)
    ImageDraw.Draw(img).text((pad_x - l, pad_y - t), text, font=font, fill=fg)
    img = img.rotate(rng.uniform(-1.5, 1.5), resample=Image.BILINEAR, expand=False, fillcolor=bg)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8)))
    px = img.load()
    for _ in range(w * h // 12):
        x, y = rng.randrange(w), rng.randrange(h)
        d = rng.randint(-25, 25)
        px[x, y] = tuple(max(0, min(255, c + d)) for c in px[x, y])
    return img


def main():
    rng = random.Random(20240613)
    os.makedirs(os.path.join(OUT, 'images'), exist_ok=True)
    rows = ['file\tlabel\twords']
    for i in range(64):
        text = line(rng)
        img = render(rng, text)
        label = i % 2  # alternate, so both halves (calibration 0-31, evaluation 32-63) are balanced
        if label:
            img = img.rotate(180)
        name = f'{i:04d}.jpg'
        img.save(os.path.join(OUT, 'images', name), quality=90)
        rows.append(f'{name}\t{label}\t{text}')
    with open(os.path.join(OUT, 'labels.tsv'), 'w') as f:
        f.write('\n'.join(rows) + '\n')


if __name__ == '__main__':
    main()
