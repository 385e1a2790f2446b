"""Rendered tables (spreadsheet-like, report-like, zebra rows) with look-up, arithmetic and Markdown questions."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from .common import Item, Pic, font, single
from .text import FIRST, LAST, MONTHS, TOWNS

SCHEMAS = {
    "sales": (["Product", "Q1", "Q2", "Q3", "Q4"], ["Widget", "Gadget", "Sprocket", "Gizmo", "Doohickey", "Bracket",
                                                     "Flange"], (10, 500)),
    "staff": (["Name", "Team", "Start year", "Projects"], None, None),
    "weather": (["Town", "High (°C)", "Low (°C)", "Rain (mm)"], TOWNS, (-5, 35)),
    "league": (["Team", "Played", "Won", "Drawn", "Lost", "Points"], ["Falcons", "Otters", "Rovers", "Comets",
                                                                       "Harriers", "Pilots", "Wolves"], None),
    "budget": (["Item", "Planned", "Actual"], ["Rent", "Salaries", "Travel", "Software", "Marketing", "Training"],
               (500, 9000)),
    "schedule": (["Month", "Sessions", "Attendees"], MONTHS, (1, 60)),
}
TEAMS = ["Design", "Sales", "Support", "Research", "Finance"]


def table_data(rng: random.Random, kind: str) -> tuple[list[str], list[list[str]]]:
    header, labels, span = SCHEMAS[kind]
    rows_n = rng.randint(3, min(7, len(labels) if labels else 7))
    if kind == "staff":
        names = rng.sample([f"{first} {last}" for first in FIRST[:12] for last in LAST[:6]], rows_n)
        return header, [[n, rng.choice(TEAMS), str(rng.randint(2010, 2024)), str(rng.randint(1, 12))] for n in names]
    if kind == "league":
        rows = []
        for team in rng.sample(labels, rows_n):
            w, d, lost = rng.randint(0, 12), rng.randint(0, 6), rng.randint(0, 12)
            rows.append([team, str(w + d + lost), str(w), str(d), str(lost), str(3 * w + d)])
        return header, sorted(rows, key=lambda r: -int(r[-1]))
    chosen = labels[:rows_n] if kind == "schedule" else rng.sample(labels, rows_n)
    if kind == "weather":
        rows = []
        for town in chosen:
            low = rng.randint(span[0], 20)
            rows.append([town, str(low + rng.randint(3, 14)), str(low), str(rng.randint(0, 40))])
        return header, rows
    return header, [[c] + [str(rng.randint(*span)) for _ in header[1:]] for c in chosen]


def draw_table(rng: random.Random, header: list[str], rows: list[list[str]]) -> Image.Image:
    size = rng.choice([13, 15, 17, 20])
    face, bold = font(rng.choice(["sans", "serif"]), size), font("sans-bold", size)
    cols = list(zip(header, *rows))
    widths = [int(max(bold.getlength(c[0]), *(face.getlength(v) for v in c[1:])) + 2 * size) for c in cols]
    rh = int(size * 2)
    pad = size
    w, h = sum(widths) + 2 * pad, rh * (len(rows) + 1) + 2 * pad
    style = rng.choice(["grid", "zebra", "plain"])
    head_bg = rng.choice([(52, 73, 94), (230, 230, 230), (0, 110, 90)])
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for r, cells in enumerate([header] + rows):
        y = pad + r * rh
        if r == 0:
            draw.rectangle((pad, y, w - pad, y + rh), fill=head_bg)
        elif style == "zebra" and r % 2 == 0:
            draw.rectangle((pad, y, w - pad, y + rh), fill=(242, 245, 250))
        x = pad
        for cell, cw in zip(cells, widths):
            ink = (255, 255, 255) if r == 0 and sum(head_bg) < 400 else (25, 25, 25)
            draw.text((x + size, y + size // 2), cell, font=bold if r == 0 else face, fill=ink)
            if style == "grid":
                draw.rectangle((x, y, x + cw, y + rh), outline=(160, 160, 160))
            x += cw
    if style == "plain":
        draw.line((pad, pad + rh, w - pad, pad + rh), fill=(60, 60, 60), width=2)
    return img


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def table_qa(rng: random.Random, header, rows) -> tuple[str, str, str | None]:
    r, c = rng.randrange(len(rows)), rng.randrange(1, len(header))
    numeric = [i for i in range(1, len(header)) if all(row[i].lstrip("-").isdigit() for row in rows)]
    col = rng.choice(numeric) if numeric else c
    best = max(rows, key=lambda row: int(row[col])) if numeric else rows[0]
    total = sum(int(row[col]) for row in rows) if numeric else 0
    options = [
        (f"What is the {header[c]} value for {rows[r][0]}?", f"{rows[r][c]}.", rows[r][c]),
        ("Convert this table to Markdown.", markdown(header, rows), None),
        ("How many rows of data does the table have (not counting the header)?", f"{len(rows)} rows.", str(len(rows))),
    ]
    if numeric:
        options += [(f"Which row has the highest {header[col]}?", f"{best[0]}, with {best[col]}.", best[0]),
                    (f"What is the sum of the {header[col]} column?",
                     f"{' + '.join(row[col] for row in rows)} = {total}.", str(total))]
    return rng.choice(options)


def make_tables(rng: random.Random, n: int) -> list[Item]:
    items = []
    for i in range(n):
        header, rows = table_data(rng, sorted(SCHEMAS)[i % len(SCHEMAS)])
        img = draw_table(rng, header, rows)
        q, reply, short = table_qa(rng, header, rows)
        pic = Pic(img, "jpeg", save={"quality": 88}) if i % 9 == 4 else Pic(img.quantize(32) if i % 3 == 0 else img)
        items.append(single("table", pic, q, reply, short, image_first=rng.random() < 0.8))
    return items
