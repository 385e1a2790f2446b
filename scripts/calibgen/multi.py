"""Prompts with several images: comparisons, image sets, interleaved text and multi-turn conversations."""

from __future__ import annotations

import random

from PIL import Image

from . import charts, documents, photos, tables
from .common import Item, Pic, flatten, money


def _bars(rng: random.Random, cats: list[str], values: list[int], title: str) -> Image.Image:
    fig, ax = charts._figure(rng, rng.choice([((4, 3), 100), ((5, 3.5), 100), ((3.2, 2.4), 100)]))
    ax.bar_label(ax.bar(cats, values, color=f"C{rng.randint(0, 9)}"), fontsize=8)
    ax.set_title(title)
    return charts.render(fig)


def two_charts(rng: random.Random, ctx: dict) -> Item:
    cats = rng.sample(charts.CATEGORY_SETS["region"], 4)
    years = sorted(rng.sample(range(2019, 2026), 2))
    a, b = rng.sample(range(10, 99), 4), rng.sample(range(10, 99), 4)
    i = rng.randrange(4)
    while a[i] == b[i]:
        b[i] = rng.randint(10, 98)
    which = "first" if a[i] > b[i] else "second"
    parts = [f"Chart for {years[0]}:", Pic(_bars(rng, cats, a, f"Orders {years[0]}")),
             f"Chart for {years[1]}:", Pic(_bars(rng, cats, b, f"Orders {years[1]}")),
             f"In which year were there more orders in the {cats[i]} region?"]
    reply = f"In {years[0] if which == 'first' else years[1]}: {max(a[i], b[i])} versus {min(a[i], b[i])}."
    return Item("multi_image", [(parts, reply)], str(years[0] if which == "first" else years[1]))


def two_receipts(rng: random.Random, ctx: dict) -> Item:
    first, info1 = documents.receipt(rng, ctx["shops"])
    second, info2 = documents.receipt(rng, ctx["shops"])
    while info2["currency"] != info1["currency"]:
        second, info2 = documents.receipt(rng, ctx["shops"])
    both = money(round(info1["total_value"] + info2["total_value"], 2), info1["currency"])
    reply = f"The first receipt totals {info1['total']} and the second {info2['total']}, so together {both}."
    return Item("multi_image", [([Pic(first.convert("L")), Pic(second.convert("L")),
                                  "What is the combined total of these two receipts?"], reply)], both)


def photo_set(rng: random.Random, ctx: dict) -> Item:
    chosen = rng.sample(ctx["photos"], rng.randint(3, 4))  # the other kinds give two images
    pics = []
    for photo in chosen:
        img = photos.load(photo)
        img.thumbnail((rng.choice([128, 192, 256, 320]),) * 2, Image.Resampling.LANCZOS)
        pics.append(Pic(flatten(img), "jpeg", save={"quality": 85}))
    if rng.random() < 0.5:
        target = rng.randrange(len(chosen))
        question = f"Which of these images shows {chosen[target].short}? Answer with its position."
        return Item("multi_image", [(pics + [question], f"Image {target + 1}.")], str(target + 1))
    reply = "\n".join(f"Image {k + 1}: {p.caption}" for k, p in enumerate(chosen))
    return Item("multi_image", [(pics + ["Describe each image in one or two sentences."], reply)])


def two_pages(rng: random.Random, ctx: dict) -> Item:
    (p1, i1), (p2, i2) = documents.notice(rng, ctx["docs"]), documents.notice(rng, ctx["docs"])
    parts = ["Here is the first page:", Pic(p1.convert("L")), "and here is the second page:", Pic(p2.convert("L")),
             "What are the titles of the two pages?"]
    return Item("multi_image", [(parts, f"The first page is titled \"{i1['title']}\" and the second "
                                        f"\"{i2['title']}\".")])


def chart_then_table(rng: random.Random, ctx: dict) -> Item:
    """Two user turns, each with its own image: the model sees images across turns."""
    fig, (q1, a1, _) = charts.bar_chart(rng)
    header, rows = tables.table_data(rng, rng.choice(sorted(tables.SCHEMAS)))
    q2, a2, short = tables.table_qa(rng, header, rows)
    table_img = tables.draw_table(rng, header, rows)
    turns = [([Pic(charts.render(fig).quantize(128)), q1], a1), (["Now look at this table.", Pic(table_img), q2], a2)]
    return Item("multi_image", turns, short)


def photo_then_receipt(rng: random.Random, ctx: dict) -> Item:
    photo = rng.choice(ctx["photos"])
    img = photos.load(photo)
    img.thumbnail((384, 384), Image.Resampling.LANCZOS)
    rec, info = documents.receipt(rng, ctx["shops"])
    turns = [([Pic(flatten(img), "jpeg", save={"quality": 84}), "Write a short caption for this image."],
              photo.caption),
             ([Pic(rec), "Thanks. Now, what is the total on this receipt?"], f"The total is {info['total']}.")]
    return Item("multi_image", turns, info["total"], system="You are a helpful assistant. Answer concisely.")


def code_pair(rng: random.Random, ctx: dict) -> Item:
    from . import code

    a, b = rng.sample(ctx["snippets"], 2)
    pics = [Pic(code.editor(rng, s[3], s[1]).quantize(64)) for s in (a, b)]
    reply = f"The first is {a[0]} code ({a[1]}), which {a[2]}; the second is {b[0]} code ({b[1]}), which {b[2]}."
    return Item("multi_image", [(["Compare these two snippets:", pics[0], pics[1], "What does each one do?"], reply)])


KINDS = [two_charts, two_receipts, photo_set, two_pages, chart_then_table, photo_then_receipt, code_pair]


def make_multi(rng: random.Random, n: int, ctx: dict) -> list[Item]:
    """ctx: 'photos', 'docs', 'shops', 'snippets' of the split (eval draws only on held-out material)."""
    return [KINDS[i % len(KINDS)](rng, ctx) for i in range(n)]
