"""Rendered documents (notices, letters, slides, scans) and shop receipts, with OCR-style questions."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from . import text as T
from .common import BODY_FONTS, Item, Pic, draw_lines, font, money, paper, scan_look, single, wrap

PAGE_SIZES = [(620, 877), (850, 1100), (595, 842), (700, 500), (480, 640), (1240, 1754)]
PAGE_WEIGHTS = [4, 3, 3, 2, 2, 1]  # a few pages larger than 1024 px: Pixtral resizes them


def person(rng: random.Random) -> str:
    return f"{rng.choice(T.FIRST)} {rng.choice(T.LAST)}"


def date(rng: random.Random, year: int | None = None) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(T.MONTHS)} {year or rng.randint(2019, 2025)}"


def address(rng: random.Random) -> list[str]:
    return [f"{rng.randint(1, 180)} {rng.choice(T.STREETS)}", f"{rng.choice(T.TOWNS)} {rng.randint(1000, 9899)}"]


# --- notices and letters ---------------------------------------------------------------------------------

def notice(rng: random.Random, docs: list) -> tuple[Image.Image, dict]:
    title, subject, body = rng.choice(docs)
    w, h = rng.choices(PAGE_SIZES, PAGE_WEIGHTS)[0]
    face_name = rng.choice(BODY_FONTS)
    size = max(12, w // rng.randint(34, 44))
    signer, when, firm = person(rng), date(rng), rng.choice(T.FIRMS)
    sentences = body[: rng.randint(3, len(body))]
    img = paper(rng, (w, h), rng.choice(["white", "cream"]))
    draw = ImageDraw.Draw(img)
    margin = w // 10
    y = draw_lines(draw, (margin, margin), [firm.upper()], font("sans-bold", int(size * 0.8)), (90, 90, 110))
    head = font(face_name + "-bold", int(size * 1.5))
    y = draw_lines(draw, (margin, y + size), wrap(title, head, w - 2 * margin), head, (20, 20, 20))
    y = draw_lines(draw, (margin, y + size // 2), [when], font(face_name, size), (60, 60, 60))
    paragraph = " ".join(sentences)
    body_face = font(face_name, size)
    y = draw_lines(draw, (margin, y + size), wrap(paragraph, body_face, w - 2 * margin), body_face, (25, 25, 25))
    draw_lines(draw, (margin, y + size), [signer, firm], font(face_name, size), (25, 25, 25))
    transcript = "\n".join([firm.upper(), title, when, paragraph, signer, firm])
    return img, {"title": title, "subject": subject, "date": when, "signer": signer, "firm": firm,
                 "text": transcript}


def letter(rng: random.Random, docs: list) -> tuple[Image.Image, dict]:
    _, subject, body = rng.choice(docs)
    w, h = rng.choice([(620, 877), (850, 1100), (595, 842)])
    face_name = rng.choice(BODY_FONTS)
    size = max(12, w // rng.randint(38, 46))
    face = font(face_name, size)
    sender, recipient, firm, when = person(rng), person(rng), rng.choice(T.FIRMS), date(rng)
    img = paper(rng, (w, h), "white")
    draw = ImageDraw.Draw(img)
    margin = w // 10
    head = [firm] + address(rng)
    draw_lines(draw, (w - margin - max(int(face.getlength(s)) for s in head), margin), head, face, (40, 40, 40))
    to = [recipient] + address(rng)
    y = draw_lines(draw, (margin, margin + 5 * size), to, face, (20, 20, 20))
    y = draw_lines(draw, (margin, y + size), [when], face, (20, 20, 20))
    body_text = " ".join(body[: rng.randint(3, len(body))])
    lines = [f"Dear {recipient.split()[0]},", ""] + wrap(body_text, face, w - 2 * margin) + ["", "Yours sincerely,", "",
                                                                                              sender]
    draw_lines(draw, (margin, y + size), lines, face, (20, 20, 20))
    transcript = "\n".join(head + to + [when, f"Dear {recipient.split()[0]},", body_text, "Yours sincerely,", sender])
    return img, {"recipient": recipient, "sender": sender, "firm": firm, "date": when, "subject": subject,
                 "text": transcript}


def slide(rng: random.Random, slides: list) -> tuple[Image.Image, dict]:
    heading, bullets = rng.choice(slides)
    w, h = rng.choice([(1280, 720), (960, 540), (640, 360), (1600, 900)])
    bg, ink, accent = rng.choice([((255, 255, 255), (30, 30, 30), (0, 90, 170)), ((24, 32, 48), (235, 235, 235),
                                                                                    (250, 190, 40)),
                                  ((245, 240, 230), (50, 40, 30), (170, 60, 40))])
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w, h // 40), fill=accent)
    size = h // 14
    draw.text((w // 12, h // 10), heading, font=font("sans-bold", size), fill=accent)
    shown = bullets[: rng.randint(3, len(bullets))]
    draw_lines(draw, (w // 12, h // 10 + 2 * size), [f"•  {b}" for b in shown], font("sans", int(size * 0.7)), ink, 1.6)
    return img, {"heading": heading, "bullets": shown}


def _doc_qa(rng: random.Random, kind: str, info: dict) -> tuple[str, str, str | None]:
    """(question, reference reply, short answer) for a rendered document."""
    options = {
        "notice": [
            ("Transcribe all the text in this document.", info.get("text"), None),
            ("What is the title of this document?", f"The title is \"{info.get('title')}\".", info.get("title")),
            ("What date is written on the document?", f"It is dated {info.get('date')}.", info.get("date")),
            ("Summarize this document in one sentence.",
             f"It is a notice from {info.get('firm')} about {info.get('subject')}.", None),
            ("Who signed this notice?", f"It was signed by {info.get('signer')}.", info.get("signer")),
        ],
        "letter": [
            ("Transcribe this letter.", info.get("text"), None),
            ("Who is this letter addressed to?", f"It is addressed to {info.get('recipient')}.", info.get("recipient")),
            ("Which company sent this letter, and who signed it?",
             f"It was sent by {info.get('firm')} and signed by {info.get('sender')}.", info.get("firm")),
            ("What is the letter about?", f"The letter is about {info.get('subject')}.", None),
        ],
        "slide": [
            ("What is the heading of this slide?", f"The heading is \"{info.get('heading')}\".", info.get("heading")),
            ("List the bullet points on this slide.", "\n".join(f"- {b}" for b in info.get("bullets", [])), None),
            ("How many bullet points are on the slide?",
             f"There are {len(info.get('bullets', []))} bullet points.", str(len(info.get("bullets", [])))),
        ],
    }
    return rng.choice(options[kind])


def make_documents(rng: random.Random, n: int, docs: list, slides: list) -> list[Item]:
    """Notices, letters and slides as PNG; a share scanned (rotated, blurred, JPEG or greyscale PNG)."""
    makers = {"notice": lambda: notice(rng, docs), "letter": lambda: letter(rng, docs),
              "slide": lambda: slide(rng, slides)}
    items = []
    for i in range(n):
        kind = ("notice", "letter", "slide")[i % 3] if i % 5 else "notice"
        img, info = makers[kind]()
        pic = _document_pic(rng, img, scanned=kind != "slide" and rng.random() < 0.35)
        question, reply, short = _doc_qa(rng, kind, info)
        items.append(single("document", pic, question, reply, short, image_first=rng.random() < 0.8))
    return items


def _document_pic(rng: random.Random, img: Image.Image, scanned: bool) -> Pic:
    if scanned:
        photo = scan_look(rng, img)
        if rng.random() < 0.6:
            return Pic(photo, "jpeg", save={"quality": rng.randint(62, 80)})
        return Pic(photo.convert("L"))
    if rng.random() < 0.15:
        return Pic(img, "webp", how="image_url", save={"quality": 80})
    return Pic(img.convert("L") if rng.random() < 0.5 else img)


# --- receipts ---------------------------------------------------------------------------------------------

def receipt(rng: random.Random, shops: dict) -> tuple[Image.Image, dict]:
    kind = rng.choice(sorted(shops))
    name, goods, (lo, hi) = shops[kind]
    chosen = rng.sample(goods, rng.randint(2, min(9, len(goods))))
    lines = [(g, rng.choice([1, 1, 1, 2, 3]), round(rng.uniform(lo, hi), 2)) for g in chosen]
    currency = rng.choice(["$", "€", "£"])
    subtotal = round(sum(q * p for _, q, p in lines), 2)
    rate = rng.choice([0, 5, 7, 8, 10, 20])
    tax = round(subtotal * rate / 100, 2)
    total = round(subtotal + tax, 2)
    day = f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2021, 2025)}"
    when = f"{day} {rng.randint(7, 21):02d}:{rng.randint(0, 59):02d}"
    rows = [name, f"{rng.randint(1, 99)} {rng.choice(T.STREETS)}, {rng.choice(T.TOWNS)}", when, "-" * 32]
    for good, qty, price in lines:
        label = f"{qty} x {good}" if qty > 1 else good
        rows.append(f"{label[:22]:<22}{money(qty * price, currency):>10}")
    rows += ["-" * 32, f"{'SUBTOTAL':<22}{money(subtotal, currency):>10}",
             f"{f'TAX {rate}%':<22}{money(tax, currency):>10}",
             f"{'TOTAL':<22}{money(total, currency):>10}", "", rng.choice(["PAID BY CARD", "PAID CASH"]), "THANK YOU!"]
    size = rng.randint(13, 19)
    face = font(rng.choice(["mono", "mono-bold"]), size)
    w = int(face.getlength("M" * 32)) + 2 * size
    h = int(len(rows) * size * 1.4) + 3 * size
    img = paper(rng, (w, h), rng.choice(["white", "cream"]))
    draw_lines(ImageDraw.Draw(img), (size, int(size * 1.5)), rows, face, (30, 30, 35), 1.4)
    info = {"shop": name, "lines": lines, "currency": currency, "total": money(total, currency), "total_value": total,
            "tax": money(tax, currency), "date": when.split()[0], "rows": rows}
    return img, info


def _receipt_qa(rng: random.Random, info: dict) -> tuple[str, str, str | None]:
    good, qty, price = rng.choice(info["lines"])
    cur = info["currency"]
    listing = "\n".join(f"- {g}: {q} x {money(p, cur)} = {money(q * p, cur)}" for g, q, p in info["lines"])
    return rng.choice([
        ("What is the total amount on this receipt?", f"The total is {info['total']}.", info["total"]),
        ("Which shop issued this receipt?", f"The receipt is from {info['shop'].title()}.", info["shop"]),
        (f"How much was paid for {good}?", f"{good}: {money(qty * price, cur)}.", money(qty * price, cur)),
        ("How much tax was charged?", f"The tax is {info['tax']}.", info["tax"]),
        ("List every item on the receipt with its price.", listing, None),
        ("How many different items are on the receipt?", f"There are {len(info['lines'])} different items.",
         str(len(info["lines"]))),
        ("Transcribe this receipt.", "\n".join(r for r in info["rows"] if r and not set(r) <= {"-"}), None),
        ("On what date was this purchase made?", f"On {info['date']}.", info["date"]),
    ])


def make_receipts(rng: random.Random, n: int, shops: dict) -> list[Item]:
    """Receipts: crisp PNGs, phone-photo JPEGs (one stored sideways with an EXIF orientation tag)."""
    items = []
    for i in range(n):
        img, info = receipt(rng, shops)
        question, reply, short = _receipt_qa(rng, info)
        items.append(single("receipt", _receipt_pic(rng, img, i), question, reply, short))
    return items


def _receipt_pic(rng: random.Random, img: Image.Image, i: int) -> Pic:
    if i % 4 == 1:  # photographed with a phone
        photo = scan_look(rng, img, rng.uniform(-6, 6))
        if i % 8 == 1:  # stored rotated; orientation 6 says "turn 90° clockwise to view"
            exif = Image.Exif()
            exif[0x0112] = 6
            return Pic(photo.transpose(Image.Transpose.ROTATE_90), "jpeg", save={"quality": 75, "exif": exif.tobytes()})
        return Pic(photo, "jpeg", save={"quality": 72})
    return Pic(img.convert("L") if i % 3 else img, how="image_url" if i % 5 == 0 else "path")
