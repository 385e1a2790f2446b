"""Screenshots of code editors and terminals, with questions about what the code does or says."""

from __future__ import annotations

import random
import re

from PIL import Image, ImageDraw

from .common import Item, Pic, font, single

# (language, function/file name, what it does, code). Written for these sets.
SNIPPETS = [
    ("Python", "mean", "returns the arithmetic mean of a list of numbers, or 0.0 for an empty list",
     "def mean(values):\n    if not values:\n        return 0.0\n    return sum(values) / len(values)"),
    ("Python", "is_palindrome",
     "checks whether a string reads the same forwards and backwards, ignoring case and spaces",
     "def is_palindrome(text):\n    cleaned = text.replace(\" \", \"\").lower()\n    return cleaned == cleaned[::-1]"),
    ("Python", "word_counts", "counts how often each word occurs in a text and returns the five most common",
     "from collections import Counter\n\n\ndef word_counts(text):\n    words = text.lower().split()\n"
     "    return Counter(words).most_common(5)"),
    ("Python", "fibonacci", "returns the first n Fibonacci numbers as a list",
     "def fibonacci(n):\n    seq = [0, 1]\n    while len(seq) < n:\n        seq.append(seq[-1] + seq[-2])\n"
     "    return seq[:n]"),
    ("Python", "read_config", "loads a JSON configuration file and fills in default values for missing keys",
     "import json\n\nDEFAULTS = {\"port\": 8080, \"debug\": False}\n\n\ndef read_config(path):\n"
     "    with open(path) as fh:\n        config = json.load(fh)\n    return {**DEFAULTS, **config}"),
    ("Python", "chunks", "splits a list into consecutive pieces of at most `size` items",
     "def chunks(items, size):\n    for start in range(0, len(items), size):\n        yield items[start:start + size]"),
    ("JavaScript", "debounce", "wraps a function so it only runs after calls have stopped for `wait` milliseconds",
     "function debounce(fn, wait) {\n  let timer;\n  return (...args) => {\n    clearTimeout(timer);\n"
     "    timer = setTimeout(() => fn(...args), wait);\n  };\n}"),
    ("JavaScript", "groupBy", "groups the items of an array into an object keyed by the result of a function",
     "const groupBy = (items, key) =>\n  items.reduce((acc, item) => {\n    const k = key(item);\n"
     "    (acc[k] ||= []).push(item);\n    return acc;\n  }, {});"),
    ("SQL", "top_customers", "lists the ten customers with the highest total order value in 2024",
     "SELECT c.name, SUM(o.amount) AS total\nFROM customers c\nJOIN orders o ON o.customer_id = c.id\n"
     "WHERE o.created_at >= '2024-01-01'\nGROUP BY c.name\nORDER BY total DESC\nLIMIT 10;"),
    ("Rust", "largest", "returns the largest element of a slice, or None when the slice is empty",
     "fn largest(values: &[i32]) -> Option<i32> {\n    let mut best = *values.first()?;\n    for &v in values {\n"
     "        if v > best {\n            best = v;\n        }\n    }\n    Some(best)\n}"),
    ("Go", "Reverse", "reverses a string rune by rune so multi-byte characters stay intact",
     "func Reverse(s string) string {\n\tr := []rune(s)\n\tfor i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {\n"
     "\t\tr[i], r[j] = r[j], r[i]\n\t}\n\treturn string(r)\n}"),
    ("C", "count_lines", "counts the newline characters in a file and returns -1 if it cannot be opened",
     "int count_lines(const char *path) {\n    FILE *f = fopen(path, \"r\");\n    if (!f) return -1;\n"
     "    int c, n = 0;\n    while ((c = fgetc(f)) != EOF)\n        if (c == '\\n') n++;\n"
     "    fclose(f);\n    return n;\n}"),
    ("Bash", "backup.sh", "copies every .txt file into a dated backup folder",
     "#!/usr/bin/env bash\nset -euo pipefail\ndest=\"backup-$(date +%F)\"\nmkdir -p \"$dest\"\n"
     "for f in *.txt; do\n  cp \"$f\" \"$dest/\"\ndone\necho \"copied to $dest\""),
    ("Python", "Stack", "implements a stack with push, pop and a check for emptiness",
     "class Stack:\n    def __init__(self):\n        self._items = []\n\n    def push(self, item):\n"
     "        self._items.append(item)\n\n    def pop(self):\n        return self._items.pop()\n\n"
     "    def is_empty(self):\n        return not self._items"),
    ("TypeScript", "clamp", "limits a number to the range between min and max",
     "export function clamp(x: number, min: number, max: number): number {\n"
     "  return Math.min(Math.max(x, min), max);\n}"),
    ("Python", "normalize", "scales a NumPy array linearly so its values lie between 0 and 1",
     "import numpy as np\n\n\ndef normalize(a):\n    lo, hi = a.min(), a.max()\n    if hi == lo:\n"
     "        return np.zeros_like(a, dtype=float)\n    return (a - lo) / (hi - lo)"),
    ("Java", "factorial", "computes n factorial iteratively using a long",
     "public static long factorial(int n) {\n    long result = 1;\n    for (int i = 2; i <= n; i++) {\n"
     "        result *= i;\n    }\n    return result;\n}"),
    ("Python", "retry", "calls a function up to three times, waiting one second after each failure",
     "import time\n\n\ndef retry(fn, attempts=3):\n    for i in range(attempts):\n        try:\n"
     "            return fn()\n        except ConnectionError:\n            if i == attempts - 1:\n"
     "                raise\n            time.sleep(1)"),
]
EVAL_SNIPPETS = [
    ("Python", "flatten", "flattens a list of lists into a single list",
     "def flatten(nested):\n    return [x for inner in nested for x in inner]"),
    ("JavaScript", "sum", "adds up all the numbers in an array",
     "function sum(numbers) {\n  return numbers.reduce((a, b) => a + b, 0);\n}"),
    ("SQL", "daily_signups", "counts new users per day over the last 30 days",
     "SELECT DATE(created_at) AS day, COUNT(*) AS signups\nFROM users\n"
     "WHERE created_at > NOW() - INTERVAL '30 days'\nGROUP BY day\nORDER BY day;"),
    ("Rust", "celsius_to_fahrenheit", "converts a temperature from Celsius to Fahrenheit",
     "fn celsius_to_fahrenheit(c: f64) -> f64 {\n    c * 9.0 / 5.0 + 32.0\n}"),
    ("Python", "unique", "removes duplicates from a list while keeping the first occurrence order",
     "def unique(items):\n    seen = set()\n    out = []\n    for x in items:\n        if x not in seen:\n"
     "            seen.add(x)\n            out.append(x)\n    return out"),
    ("Go", "Max", "returns the larger of two integers",
     "func Max(a, b int) int {\n\tif a > b {\n\t\treturn a\n\t}\n\treturn b\n}"),
]

KEYWORDS = set("""def return if else elif for while in not and or import from class try except raise with as yield
function const let var return fn mut let pub struct impl SELECT FROM JOIN ON WHERE GROUP BY ORDER LIMIT AS DESC
func for range int long static public void export number string do done then fi set echo None True False
Some Option break continue new""".split())
THEMES = {
    "light": {"bg": (255, 255, 255), "fg": (36, 41, 46), "kw": (215, 58, 73), "str": (3, 47, 98),
              "com": (106, 115, 125), "num": (0, 92, 197), "gutter": (150, 150, 150), "bar": (240, 240, 240)},
    "dark": {"bg": (30, 30, 30), "fg": (212, 212, 212), "kw": (86, 156, 214), "str": (206, 145, 120),
             "com": (106, 153, 85), "num": (181, 206, 168), "gutter": (110, 110, 110), "bar": (45, 45, 45)},
    "solar": {"bg": (253, 246, 227), "fg": (101, 123, 131), "kw": (133, 153, 0), "str": (42, 161, 152),
              "com": (147, 161, 161), "num": (211, 54, 130), "gutter": (160, 160, 150), "bar": (238, 232, 213)},
}
TOKEN = re.compile(r"(#.*|//.*|--.*|\"[^\"]*\"|'[^']*'|\b\d+(?:\.\d+)?\b|\w+|\s+|.)")


def _colour(tok: str, theme: dict):
    if tok.startswith(("#", "//", "--")) and len(tok) > 1 and not tok.startswith("#!"):
        return theme["com"]
    if tok[:1] in "\"'":
        return theme["str"]
    if tok[:1].isdigit():
        return theme["num"]
    return theme["kw"] if tok in KEYWORDS else theme["fg"]


def editor(rng: random.Random, code: str, filename: str) -> Image.Image:
    """An editor window: title bar with the file name, line numbers, simple syntax colours."""
    theme = THEMES[rng.choice(sorted(THEMES))]
    size = rng.choice([13, 15, 17, 20, 24])
    face, bold = font("mono", size), font("mono-bold", size)
    lines = code.expandtabs(4).split("\n")
    cw, lh = face.getlength("M"), int(size * 1.45)
    gutter = int(cw * 4)
    w = int(gutter + cw * (max(map(len, lines)) + 4))
    w = max(w, rng.choice([0, 0, 0, 480, 640, 1100]))  # mostly fitted to the code, sometimes a wide window
    bar = int(size * 2)
    h = bar + lh * (len(lines) + 1)
    img = Image.new("RGB", (w, h), theme["bg"])
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w, bar), fill=theme["bar"])
    draw.text((int(cw), size // 2), filename, font=bold, fill=theme["fg"])
    for row, line in enumerate(lines):
        y = bar + lh // 2 + row * lh
        draw.text((int(cw * 0.5), y), f"{row + 1:>2}", font=face, fill=theme["gutter"])
        x = gutter
        for tok in TOKEN.findall(line):
            draw.text((x, y), tok, font=face, fill=_colour(tok, theme))
            x += face.getlength(tok)
    return img


EXT = {"Python": "py", "JavaScript": "js", "TypeScript": "ts", "SQL": "sql", "Rust": "rs", "Go": "go", "C": "c",
       "Bash": "sh", "Java": "java"}


def _code_qa(rng: random.Random, snippet) -> tuple[str, str, str | None]:
    lang, name, does, code = snippet
    return rng.choice([
        ("What does this code do?", f"The {lang} code defines `{name}`, which {does}.", None),
        ("Transcribe the code in this screenshot.", f"```{lang.lower()}\n{code}\n```", None),
        ("Which programming language is this?", f"{lang}.", lang),
        ("What is the name of the function or script shown?", f"`{name}`.", name),
        ("Explain this code to a beginner.", f"This {lang} snippet {does}. The name `{name}` is what you call or run.",
         None),
    ])


TERMINALS = [
    ("pytest -q", "........F.\nFAILED tests/test_io.py::test_roundtrip - AssertionError\n1 failed, 9 passed in 0.84s",
     "How many tests passed and how many failed?", "9 passed and 1 failed (tests/test_io.py::test_roundtrip).",
     "9 passed, 1 failed"),
    ("git log --oneline -4", "a1f3c2e Fix off-by-one in pager\n9b7d210 Add CSV export\n4e0aa91 Update README\n"
     "77c1d05 Initial commit", "What is the most recent commit message?", "\"Fix off-by-one in pager\" (a1f3c2e).",
     "Fix off-by-one in pager"),
    ("df -h /", "Filesystem      Size  Used Avail Use% Mounted on\n/dev/nvme0n1p2  468G  312G  133G  71% /",
     "How full is the root file system?", "It is 71% full: 312G used of 468G, 133G available.", "71%"),
    ("python --version", "Python 3.11.7", "Which Python version is installed?", "Python 3.11.7.", "3.11.7"),
    ("ls -l", "total 12\n-rw-r--r-- 1 ana staff  2048 Mar  3 10:12 notes.md\n"
     "-rwxr-xr-x 1 ana staff  4096 Mar  3 10:15 run.sh\ndrwxr-xr-x 2 ana staff  4096 Mar  2 18:40 data",
     "Which entry is a directory?", "`data` is the directory.", "data"),
    ("curl -I https://example.org", "HTTP/2 200\ncontent-type: text/html; charset=UTF-8\ncontent-length: 1256",
     "What HTTP status code was returned?", "200 (OK).", "200"),
]


def terminal(rng: random.Random, command: str, output: str) -> Image.Image:
    size = rng.choice([13, 15, 18])
    face = font("mono", size)
    lines = [f"$ {command}"] + output.split("\n")
    lh = int(size * 1.4)
    w = max(int(face.getlength(max(lines, key=len))) + 3 * size, rng.choice([400, 640, 800]))
    img = Image.new("RGB", (w, lh * (len(lines) + 2)), (12, 12, 12))
    draw = ImageDraw.Draw(img)
    for row, line in enumerate(lines):
        fill = (120, 220, 120) if row == 0 else (220, 220, 220)
        draw.text((size, lh + row * lh), line, font=face, fill=fill)
    return img


def make_code(rng: random.Random, n: int, snippets: list, terminals: list) -> list[Item]:
    items = []
    for i in range(n):
        if i % 6 == 5:
            command, output, q, reply, short = terminals[(i // 6) % len(terminals)]
            items.append(single("code", Pic(terminal(rng, command, output)), q, reply, short))
            continue
        snippet = snippets[i % len(snippets)]
        img = editor(rng, snippet[3], f"{snippet[1]}.{EXT[snippet[0]]}" if "." not in snippet[1] else snippet[1])
        q, reply, short = _code_qa(rng, snippet)
        pic = Pic(img, "webp", save={"lossless": True}) if i % 7 == 3 else Pic(img.quantize(64) if i % 2 else img)
        items.append(single("code", pic, q, reply, short, image_first=rng.random() < 0.7))
    return items
