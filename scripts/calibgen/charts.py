"""Charts and plots drawn with matplotlib, with value-reading questions whose answers are on the chart."""

from __future__ import annotations

import io
import random

from PIL import Image

from .common import Item, Pic, single

CATEGORY_SETS = {
    "month": ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
    "region": ["North", "South", "East", "West", "Central"],
    "product": ["Laptops", "Phones", "Tablets", "Monitors", "Printers", "Headsets"],
    "fruit": ["Apples", "Bananas", "Cherries", "Grapes", "Lemons", "Mangoes"],
    "team": ["Design", "Sales", "Support", "Research", "Finance"],
    "weekday": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
}
MEASURES = ["Sales (units)", "Revenue (k$)", "Visitors", "Orders", "Tickets closed", "Rainfall (mm)", "Downloads (k)"]
FIGSIZES = [((3.2, 2.4), 100), ((4, 3), 100), ((5, 3.5), 100), ((6.4, 4.8), 100), ((8, 4.5), 100),
            ((12, 4), 100), ((10, 6), 150), ((4.5, 7), 100)]
FIG_WEIGHTS = [2, 4, 4, 3, 3, 1, 1, 1]
STYLES = ["default", "ggplot", "bmh", "seaborn-v0_8-whitegrid", "fivethirtyeight", "dark_background"]


def render(fig, transparent: bool = False) -> Image.Image:
    """A matplotlib figure → PIL image (RGBA when transparent, else RGB)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", transparent=transparent, metadata={"Software": None})
    plt.close(fig)
    buf.seek(0)
    img = Image.open(buf)
    img.load()
    return img if transparent else img.convert("RGB")


def _figure(rng: random.Random, size=None):
    import matplotlib.pyplot as plt

    (w, h), dpi = size or rng.choices(FIGSIZES, FIG_WEIGHTS)[0]
    plt.style.use("default")
    plt.style.use(rng.choice(STYLES))
    return plt.subplots(figsize=(w, h), dpi=dpi, layout="constrained")


def bar_chart(rng: random.Random, horizontal: bool = False):
    key = rng.choice(sorted(CATEGORY_SETS))
    cats = CATEGORY_SETS[key][: rng.randint(3, len(CATEGORY_SETS[key]))]
    values = rng.sample(range(5, 100), len(cats))  # distinct: the maximum is unambiguous
    measure = rng.choice(MEASURES)
    fig, ax = _figure(rng)
    bars = (ax.barh if horizontal else ax.bar)(cats, values, color=f"C{rng.randint(0, 9)}")
    ax.bar_label(bars, padding=2, fontsize=8)
    (ax.set_xlabel if horizontal else ax.set_ylabel)(measure)
    ax.set_title(f"{measure} by {key}")
    pick = rng.randrange(len(cats))
    top = cats[values.index(max(values))]
    qa = [(f"Which {key} has the highest value in this chart?", f"{top}, with {max(values)}.", top),
          (f"What is the value for {cats[pick]}?", f"The value for {cats[pick]} is {values[pick]}.", str(values[pick])),
          (f"Which {key} has the lowest value?", f"{cats[values.index(min(values))]}, with {min(values)}.",
           cats[values.index(min(values))]),
          ("Read all the values from this chart.", "\n".join(f"- {c}: {v}" for c, v in zip(cats, values)), None),
          ("What does this chart show?", f"A {'horizontal ' if horizontal else ''}bar chart of {measure.lower()} "
                                         f"for {len(cats)} {key}s; {top} is highest at {max(values)}.", None)]
    return fig, rng.choice(qa)


def line_chart(rng: random.Random):
    months = CATEGORY_SETS["month"][: rng.randint(6, 12)]
    start, values = rng.randint(20, 80), []
    for _ in months:
        start = max(1, start + rng.randint(-15, 18))
        values.append(start)
    measure = rng.choice(MEASURES)
    fig, ax = _figure(rng)
    ax.plot(months, values, marker="o")
    for x, v in zip(months, values):
        ax.annotate(str(v), (x, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_ylabel(measure)
    ax.set_title(f"Monthly {measure.lower()}")
    peak = months[values.index(max(values))]
    i = rng.randrange(len(months))
    trend = "increased" if values[-1] > values[0] else "decreased" if values[-1] < values[0] else "stayed the same"
    qa = [("In which month was the value highest?", f"In {peak}, at {max(values)}.", peak),
          (f"What was the value in {months[i]}?", f"{values[i]}.", str(values[i])),
          (f"Did the value increase or decrease from {months[0]} to {months[-1]}?",
           f"It {trend}, from {values[0]} to {values[-1]}.", trend),
          ("List the monthly values shown in the chart.", ", ".join(f"{m}: {v}" for m, v in zip(months, values)), None)]
    return fig, rng.choice(qa)


def pie_chart(rng: random.Random):
    key = rng.choice(["region", "product", "fruit", "team"])
    cats = rng.sample(CATEGORY_SETS[key], rng.randint(3, 5))
    cuts = sorted(rng.sample(range(5, 96), len(cats) - 1))
    shares = [b - a for a, b in zip([0] + cuts, cuts + [100])]
    if len(set(shares)) < len(shares) or min(shares) < 3:
        return pie_chart(rng)  # keep slices distinct and readable
    fig, ax = _figure(rng, rng.choice([((4, 4), 100), ((5, 4), 100), ((6, 5), 100)]))
    ax.pie(shares, labels=cats, autopct="%1.0f%%", startangle=90, counterclock=False)
    ax.set_title(f"Share by {key}")
    biggest = cats[shares.index(max(shares))]
    i = rng.randrange(len(cats))
    qa = [("Which slice is the largest?", f"{biggest}, with {max(shares)}%.", biggest),
          (f"What percentage does {cats[i]} account for?", f"{shares[i]}%.", f"{shares[i]}%"),
          ("List the slices and their percentages.", "\n".join(f"- {c}: {s}%" for c, s in zip(cats, shares)), None)]
    return fig, rng.choice(qa)


def grouped_chart(rng: random.Random):
    import numpy as np

    key = rng.choice(["region", "product", "team"])
    cats = CATEGORY_SETS[key][: rng.randint(3, 5)]
    years = sorted(rng.sample(range(2018, 2025), 2))
    a, b = [rng.randint(10, 90) for _ in cats], [rng.randint(10, 90) for _ in cats]
    fig, ax = _figure(rng)
    x = np.arange(len(cats))
    for off, vals, year in ((-0.2, a, years[0]), (0.2, b, years[1])):
        ax.bar_label(ax.bar(x + off, vals, 0.4, label=str(year)), fontsize=7, padding=1)
    ax.set_xticks(x, cats)
    ax.legend()
    ax.set_title(f"{rng.choice(MEASURES)} per {key}")
    i = rng.randrange(len(cats))
    higher = years[0] if a[i] > b[i] else years[1] if b[i] > a[i] else None
    reply = f"{higher}: {max(a[i], b[i])} versus {min(a[i], b[i])}." if higher else f"Neither: both are {a[i]}."
    qa = [(f"For {cats[i]}, which year had the higher value?", reply, str(higher) if higher else "neither"),
          (f"What was the {years[1]} value for {cats[i]}?", f"{b[i]}.", str(b[i])),
          (f"What is the total of the {years[0]} bars?", f"{' + '.join(map(str, a))} = {sum(a)}.", str(sum(a)))]
    return fig, rng.choice(qa)


def scatter_chart(rng: random.Random):
    n = rng.randint(6, 14)
    slope = rng.choice([-1, 1]) * rng.uniform(0.6, 2.0)
    xs = [rng.uniform(0, 10) for _ in range(n)]
    ys = [slope * x + rng.uniform(-2, 2) + 12 for x in xs]
    fig, ax = _figure(rng)
    ax.scatter(xs, ys, s=rng.choice([20, 40, 60]), color=f"C{rng.randint(0, 9)}")
    ax.set_xlabel(rng.choice(["Hours studied", "Temperature (°C)", "Advertising (k$)", "Age (years)"]))
    ax.set_ylabel(rng.choice(["Score", "Sales", "Energy use", "Visits"]))
    direction = "positive" if slope > 0 else "negative"
    qa = [("Is the relationship between the two variables positive or negative?",
           f"It is {direction}: y {'rises' if slope > 0 else 'falls'} as x grows.", direction),
          ("How many points are plotted?", f"There are {n} points.", str(n))]
    return fig, rng.choice(qa)


def sparkline(rng: random.Random) -> tuple[Image.Image, tuple[str, str, str]]:
    """A tiny inline chart (16-32 px high), sent as a data: URL."""
    import matplotlib.pyplot as plt

    up = rng.random() < 0.5
    ys = [i * (1 if up else -1) + rng.uniform(-1.5, 1.5) for i in range(12)]
    fig = plt.figure(figsize=(rng.choice([0.48, 0.64, 0.96]), rng.choice([0.16, 0.24, 0.32])), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.plot(ys, color="green" if up else "red", linewidth=1)
    ax.axis("off")
    word = "up" if up else "down"
    return render(fig), ("Is this small trend line going up or down overall?", f"It goes {word}.", word)


KINDS = {"bar": bar_chart, "barh": lambda rng: bar_chart(rng, horizontal=True), "line": line_chart,
         "pie": pie_chart, "grouped": grouped_chart, "scatter": scatter_chart}


def chart_pic(rng: random.Random, img: Image.Image, i: int) -> Pic:
    """Vary the file format: palette PNG, RGB PNG, WebP, GIF (some animated) and transparent PNG."""
    slot = i % 10
    if img.mode == "RGBA":  # transparent background: mistral-common composites it over white
        return Pic(img, "png")
    if slot == 3:
        return Pic(img.convert("RGB").quantize(64), "gif", how="image_url")
    if slot == 7:  # animated: frame 2 is the same chart inverted; only frame 1 is seen
        from PIL import ImageOps

        rgb = img.convert("RGB")
        return Pic(rgb.quantize(64), "gif", frames=[ImageOps.invert(rgb).quantize(64)])
    if slot == 5:
        return Pic(img.convert("RGB"), "webp", save={"quality": 85})
    return Pic(img.quantize(128) if slot % 2 else img, "png")


def make_charts(rng: random.Random, n: int) -> list[Item]:
    items = []
    for i in range(n):
        if i % 12 == 11:
            img, (q, reply, short) = sparkline(rng)
            items.append(single("chart", Pic(img, "png", how="data"), q, reply, short))
            continue
        kind = sorted(KINDS)[i % len(KINDS)]
        fig, (q, reply, short) = KINDS[kind](rng)
        img = render(fig, transparent=i % 10 == 9)
        items.append(single("chart", chart_pic(rng, img, i), q, reply, short, image_first=rng.random() < 0.75))
    return items
