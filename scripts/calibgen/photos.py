"""Real photographs shipped inside scikit-image (`skimage.data`), with captions written for these sets.

Only images whose skimage docstring states public domain, CC0 or "no known copyright restrictions" are
used (see calibration/README.md). Calibration and evaluation use different photographs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .common import Item, Pic, flatten, single


@dataclass(frozen=True)
class Photo:
    file: str            # file name inside skimage/data
    source: str          # provenance for the README
    licence: str
    caption: str
    questions: tuple     # (question, reply, short answer)
    crops: tuple = ()    # ((left, top, right, bottom) as fractions, question, reply)
    short: str = ""      # a few words, for thumbnails


CALIB_PHOTOS = [
    Photo("astronaut.png", "NASA Great Images (Eileen Collins)", "public domain",
          "A smiling astronaut with short curly hair poses in an orange launch-and-entry suit with mission patches. "
          "She rests an arm on a white helmet; an American flag hangs on the left and a model of the space shuttle "
          "stands on the right.",
          (("What colour is the astronaut's suit?", "The suit is orange.", "orange"),
           ("What object is on the right side of the picture?", "A model of the space shuttle.", "space shuttle model"),
           ("Is there a flag in the picture? If so, which one?", "Yes, an American flag on the left.", "American flag")),
          (((0.0, 0.0, 0.17, 0.45), "What is shown in this image?",
            "Part of an American flag: white stars on blue, and red and white stripes."),
           ((0.55, 0.55, 1.0, 1.0), "What object is this?", "A space helmet, white on top with a dark, shiny visor.")),
          "an astronaut"),
    Photo("camera.png", "scikit-image, photo by Lav Varshney", "CC0",
          "A black-and-white photo of a man in a dark coat looking through a camera mounted on a tripod. He stands "
          "on a grassy field; buildings and a tall tower are faint in the background.",
          (("Is this photo in colour or in black and white?", "It is in black and white.", "black and white"),
           ("What is the man doing?", "He is taking a picture with a camera on a tripod.", "taking a photo"),
           ("What is the ground covered with?", "Short grass.", "grass")),
          (((0.35, 0.55, 0.95, 1.0), "What is in this crop?", "The legs of a tripod standing on grass."),),
          "a photographer"),
    Photo("coffee.png", "scikit-image, photo by Rachel Michetti (Pikolo Espresso Bar)", "CC0",
          "An espresso in a white cup with a red outside, on a matching red saucer with a small metal spoon. The "
          "cup stands on a worn wooden table and the coffee has a light brown crema.",
          (("What drink is in the cup?", "An espresso with crema.", "espresso"),
           ("What colour is the saucer?", "Red.", "red"),
           ("What is the table made of?", "Wood.", "wood")),
          (((0.45, 0.45, 0.8, 0.85), "What is this shiny object?", "A small metal spoon lying on a saucer."),),
          "a cup of coffee"),
    Photo("chelsea.png", "scikit-image, photo by Stefan van der Walt (Chelsea the cat)", "CC0",
          "A close-up of a tabby cat's face. The cat has green-yellow eyes, a pink nose and white whiskers, and "
          "looks straight at the camera.",
          (("What animal is this?", "A cat (a tabby).", "cat"),
           ("What colour are the animal's eyes?", "Green-yellow.", "green"),
           ("Where is the cat looking?", "Straight at the camera.", "at the camera")),
          (((0.25, 0.1, 0.75, 0.6), "What do you see here?", "The eyes of a tabby cat."),),
          "a cat"),
    Photo("retina.jpg", "Wikimedia Commons, Mikael Häggström (fundus photograph)", "CC0",
          "A fundus photograph of a healthy left eye's retina: an orange-red disc on black, with the bright optic "
          "disc on the left and blood vessels branching across it.",
          (("What kind of medical image is this?", "A fundus photograph of the retina.", "fundus photograph"),
           ("On which side is the optic disc?", "On the left side.", "left")),
          (((0.0, 0.3, 0.35, 0.7), "What is the bright round area?",
            "The optic disc, where the blood vessels enter the retina."),),
          "a retina"),
    Photo("ihc.png", "scikit-image, Center for Microscopy and Molecular Imaging", "no known copyright restrictions",
          "A microscope image of colon tissue stained for immunohistochemistry: brown-stained glands stand out "
          "against blue hematoxylin-stained tissue.",
          (("Which two stain colours are visible?", "Brown (DAB) and blue (hematoxylin).", "brown and blue"),
           ("Is this a photo of a landscape or a microscope image?", "A microscope image of tissue.", "microscope image")),
          (), "stained tissue"),
    Photo("coins.png", "Brooklyn Museum collection (Greek coins from Pompeii)", "no known copyright restrictions",
          "Twenty-four ancient Greek coins from Pompeii laid out in four rows of six on a dark background, in black "
          "and white.",
          (("How many coins are in the picture?", "There are 24 coins, four rows of six.", "24"),
           ("How are the coins arranged?", "In four rows of six.", "4 rows of 6")),
          (),
          "coins"),
    Photo("brick.png", "CC0Textures (Bricks25), processed by scikit-image", "CC0",
          "A grey brick wall photographed at an angle, with long bricks laid in columns.",
          (("What material is the wall made of?", "Bricks.", "brick"),),
          (), "a brick wall"),
    Photo("grass.png", "DeviantArt, linolafett (Grass 01), processed by scikit-image", "CC0",
          "A black-and-white close-up of grass with fallen leaves.",
          (("What is shown in this picture?", "A close-up of grass and leaves.", "grass"),),
          (), "grass"),
    Photo("horse.png", "openclipart, Andreas Preuss (marauder)", "CC0",
          "A black silhouette of a horse standing, facing right, on a transparent background.",
          (("What animal is shown?", "A horse.", "horse"),
           ("Which way is the horse facing?", "To the right.", "right")),
          (), "a horse silhouette"),
    Photo("cell.png", "scikit-image, Paul Müller (quantitative phase image)", "CC0",
          "A quantitative phase microscopy image of a single round cell, a bright disc in the lower right of a "
          "grey background with faint banding.",
          (("How many cells are visible?", "One cell.", "1"),
           ("Where in the image is the cell?", "In the lower right.", "lower right")),
          (), "a cell"),
    Photo("microaneurysms.png", "High-Resolution Fundus database, Andreas Maier", "CC0",
          "A small grey detail of a retina image showing dark blood vessels.",
          (("What does this small image show?", "A detail of a retina with blood vessels.", "retina detail"),),
          (), "retina detail"),
]

EVAL_PHOTOS = [
    Photo("rocket.jpg", "SpaceX Photos (DSCOVR launch on Falcon 9)", "public domain",
          "A white rocket stands on its launch pad at dusk between tall lattice lightning towers, under a deep "
          "blue sky; bright lights glow around the base.",
          (("What is standing in the middle of the picture?", "A rocket on its launch pad.", "rocket"),
           ("What time of day does it seem to be?", "Dusk or night: the sky is dark blue and the lights are on.", "dusk")),
          (((0.0, 0.0, 0.3, 1.0), "What is this structure?", "A tall steel lattice tower next to the launch pad."),),
          "a rocket"),
    Photo("hubble_deep_field.jpg", "NASA / HubbleSite (Hubble eXtreme Deep Field)", "public domain",
          "The Hubble eXtreme Deep Field: thousands of small galaxies of different colours and shapes scattered "
          "across a black background.",
          (("What do the many small objects in this image represent?", "Distant galaxies.", "galaxies"),
           ("What colour is the background?", "Black.", "black")),
          (), "galaxies"),
    Photo("clock_motion.png", "scikit-image, photo by Stefan van der Walt", "public domain",
          "A black-and-white photo of a wall clock, blurred because the camera moved sideways.",
          (("Why is the object blurry?", "The camera moved horizontally while the photo was taken.", "motion blur"),
           ("What object is on the wall?", "A clock.", "clock")),
          (), "a blurry clock"),
    Photo("gravel.png", "CC0Textures (Gravel04), processed by scikit-image", "CC0",
          "A black-and-white close-up of gravel: many small, rounded stones.",
          (("What is shown in this picture?", "Gravel: many small stones.", "gravel"),),
          (), "gravel"),
    Photo("text.png", "Wikipedia (File:Corner.png)", "public domain",
          "Handwritten equations on lined paper, photographed at a slant.",
          (("Is the writing printed or handwritten?", "Handwritten.", "handwritten"),
           ("What kind of content is written on the paper?", "Mathematical equations.", "equations")),
          (), "handwriting"),
]

PROMPTS = ["Describe this photo.", "Write a short caption for this image.", "What is in this picture?"]


def load(photo: Photo) -> Image.Image:
    import skimage

    img = Image.open(Path(skimage.__file__).parent / "data" / photo.file)
    img.load()
    return img


def scaled(img: Image.Image, factor: float) -> Image.Image:
    if factor == 1:
        return img
    size = (max(16, round(img.width * factor)), max(16, round(img.height * factor)))
    return img.resize(size, Image.Resampling.LANCZOS)


def crop(img: Image.Image, box) -> Image.Image:
    w, h = img.size
    return img.crop(tuple(round(f * s) for f, s in zip(box, (w, h, w, h))))


def photo_pic(rng: random.Random, img: Image.Image, photo: Photo, slot: int) -> Pic:
    """Format variety: JPEG, WebP, PNG (greyscale, RGBA), CMYK JPEG, EXIF-rotated JPEG."""
    if img.mode in ("RGBA", "LA"):
        return Pic(img, "png")
    if img.mode == "L" and slot % 5 == 4:  # greyscale + alpha: a soft vignette, composited over white
        alpha = Image.radial_gradient("L").resize(img.size).point(lambda v: 255 - max(0, v - 160) * 2)
        return Pic(Image.merge("LA", (img, alpha)), "png")
    if img.mode == "L":
        return Pic(img, "png") if slot % 2 else Pic(img, "jpeg", save={"quality": 82})
    if slot % 7 == 3:
        return Pic(img.convert("CMYK"), "jpeg", save={"quality": 85})
    if slot % 7 == 5:
        exif = Image.Exif()
        exif[0x0112] = 8  # "turn 90° counter-clockwise to view": stored turned the other way
        return Pic(img.transpose(Image.Transpose.ROTATE_270), "jpeg", save={"quality": 84, "exif": exif.tobytes()})
    if slot % 3 == 1:
        return Pic(img, "webp", how="image_url", save={"quality": 82})
    return Pic(img, "jpeg", save={"quality": rng.randint(80, 88)})


def photo_items(rng: random.Random, photo: Photo, slot: int) -> Item:
    """One sample of `photo`; `slot` walks through caption, question, crop and thumbnail variants."""
    img = load(photo)
    variant = ("caption", "question", "crop", "thumb")[slot % 4]
    if variant == "crop" and photo.crops:
        box, question, reply = rng.choice(photo.crops)
        return single("photo", photo_pic(rng, crop(img, box), photo, slot), question, reply)
    if variant == "thumb":
        side = rng.choice([16, 24, 32, 48])
        thumb = img.copy()
        thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
        pic = Pic(flatten(thumb), "png", how="data") if slot % 8 == 3 else photo_pic(rng, thumb, photo, slot)
        return single("photo", pic, "What is shown in this small image?", f"It looks like {photo.short}.", photo.short)
    big = scaled(img, rng.choice([0.5, 0.75, 1.0, 1.0]) if max(img.size) < 1100 else 1.0)
    if variant == "question":
        question, reply, short = rng.choice(photo.questions)
        return single("photo", photo_pic(rng, big, photo, slot), question, reply, short)
    return single("photo", photo_pic(rng, big, photo, slot), rng.choice(PROMPTS), photo.caption)


def make_photos(rng: random.Random, n: int, photos: list[Photo]) -> list[Item]:
    return [photo_items(rng, photos[i % len(photos)], i // len(photos) + i) for i in range(n)]
