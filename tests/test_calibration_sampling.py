"""Deterministic selection, content hashes, disjointness, and the max_tokens budget."""

from __future__ import annotations

import pytest
from calibration_helpers import image_bytes, sample_row, tokenizer, write_manifest

from pixtral_quant.calibration import budget
from pixtral_quant.calibration.dataset import load_set
from pixtral_quant.calibration.images import image_token_count
from pixtral_quant.calibration.manifest import read_manifest
from pixtral_quant.calibration.sample import Sample
from pixtral_quant.calibration.sampling import check_disjoint, content_hash, hash_sample, rank, sample_hash
from pixtral_quant.errors import InputError, UsageError


def _samples(n: int) -> list[Sample]:
    return [Sample(f"s{i}", f"m:{i}", [{"role": "user", "content": [{"type": "text", "text": str(i)}]},
                                       {"role": "assistant", "content": "x"}]) for i in range(n)]


def test_rank_is_deterministic_and_seeded():
    samples = _samples(50)
    assert rank(samples, 0) == rank(samples, 0)
    assert rank(samples, 0) != rank(samples, 1)
    assert sorted(rank(samples, 3)) == list(range(50))
    # adding samples keeps the others' relative order: a subset pick is stable under growth
    grown = samples + _samples(80)[50:]
    assert [i for i in rank(grown, 3) if i < 50] == rank(samples, 3)


def test_rank_pinned_values():
    """Guards the selection rule itself: checkpoints record which samples a seed picked."""
    assert rank(_samples(10), 0) == [1, 6, 4, 9, 5, 0, 8, 3, 2, 7]
    assert rank(_samples(10), 1) == [7, 2, 6, 8, 0, 1, 9, 5, 3, 4]


def test_sample_hash_depends_on_content_not_names(tmp_path):
    png, other = image_bytes("RGB", (20, 20)), image_bytes("RGB", (20, 21))
    a = write_manifest(tmp_path / "a", [sample_row("one", {"path": "images/x.png"}, "q")], {"x.png": png})
    b = write_manifest(tmp_path / "b", [sample_row("two", {"path": "images/y.png"}, "q")], {"y.png": png})
    c = write_manifest(tmp_path / "c", [sample_row("one", {"path": "images/x.png"}, "q?")], {"x.png": png})
    d = write_manifest(tmp_path / "d", [sample_row("one", {"path": "images/x.png"}, "q")], {"x.png": other})
    hashes = [hash_sample(read_manifest(p)[0])[0] for p in (a, b, c, d)]
    assert hashes[0] == hashes[1] and len(set(hashes)) == 3
    assert sample_hash(read_manifest(a)[0], ["0" * 64]) != hashes[0]


def test_content_hash_is_ordered():
    assert content_hash(["a", "b"]) != content_hash(["b", "a"])
    assert content_hash(["a"]).startswith("sha256:") and len(content_hash(["a"])) == 71


def test_check_disjoint(tmp_path):
    png = image_bytes("RGB", (20, 20))
    a = read_manifest(write_manifest(tmp_path / "a", [sample_row("a1", {"path": "images/x.png"}, "q"),
                                                      sample_row("a2", "text only")], {"x.png": png}))
    same_sample = read_manifest(write_manifest(tmp_path / "b", [sample_row("b1", {"path": "images/z.png"}, "q")],
                                               {"z.png": png}))
    same_image = read_manifest(write_manifest(tmp_path / "c", [sample_row("c1", {"path": "images/z.png"}, "other")],
                                              {"z.png": png}))
    fresh = read_manifest(write_manifest(tmp_path / "d", [sample_row("d1", "new text")]))
    check_disjoint(a, fresh)
    for clash in (same_sample, same_image):
        with pytest.raises(InputError) as info:
            check_disjoint(a, clash)
        assert "also in the calibration set" in info.value.message and "a1" in info.value.message


def test_builtin_sets_are_disjoint():
    from pixtral_quant.calibration.builtin import builtin_manifest

    check_disjoint(read_manifest(builtin_manifest("calib")), read_manifest(builtin_manifest("eval")))


def test_num_samples_seed_picks_the_same_samples(tmp_path):
    rows = [sample_row(f"s{i}", f"question {i}") for i in range(12)]
    path = write_manifest(tmp_path, rows)
    one, two = (load_set(str(path), "v7m1", num_samples=5, seed=7) for _ in range(2))
    other = load_set(str(path), "v7m1", num_samples=5, seed=8)
    assert [s.id for s in one.samples] == [s.id for s in two.samples] != [s.id for s in other.samples]
    assert one.content_hash == two.content_hash != other.content_hash
    with pytest.raises(UsageError, match="has 12 samples"):
        load_set(str(path), "v7m1", num_samples=13)


# --- max_tokens --------------------------------------------------------------------------------------------

def test_fit_keeps_downsizes_and_drops():
    assert budget.fit(10, [(100, 100)], None).action == "keep"
    assert budget.fit(10, [(100, 100)], 10 + image_token_count(100, 100)).action == "keep"
    down = budget.fit(10, [(1000, 500), (40, 40)], 400)
    assert down.action == "downsize" and down.tokens <= 400
    assert down.sizes[1] == (40, 40) and max(down.sizes[0]) == down.cap  # the big image shrinks first
    assert budget.tokens_at(10, [(1000, 500), (40, 40)], down.cap + 16) > 400  # the largest cap that fits
    assert budget.fit(500, [(100, 100)], 400).action == "drop"
    assert budget.fit(10, [(64, 64)] * 50, 100).action == "drop"  # too many images even at 64 px
    assert budget.fit(500, [], 400).reason.endswith("(text alone)")


@pytest.mark.parametrize("max_tokens", [120, 300, 999])
def test_fit_never_exceeds_the_limit(max_tokens):
    for sizes in ([(1600, 900)], [(300, 4000), (800, 800)], [(17, 17)] * 3):
        fitted = budget.fit(20, sizes, max_tokens)
        assert fitted.action == "drop" or budget.tokens_at(20, sizes, fitted.cap) == fitted.tokens <= max_tokens


def test_max_tokens_downsizes_for_real(tmp_path):
    big, small = image_bytes("RGB", (1500, 700)), image_bytes("RGB", (50, 50))
    rows = [sample_row("big", {"path": "images/big.png"}, "Read it."), sample_row("small", {"path": "images/s.png"}),
            sample_row("long", "word " * 400)]
    path = write_manifest(tmp_path, rows, {"big.png": big, "s.png": small})
    cset = load_set(str(path), "v7m1", max_tokens=300)
    assert [s.id for s in cset.samples] == ["big", "small"] and cset.fits[0].action == "downsize"
    assert len(cset.stats.dropped) == 1 and "(sample long)" in cset.stats.dropped[0][0]
    assert cset.stats.downsized == 1
    encoded = cset.encoded(tokenizer("v7m1"), 0)
    assert len(encoded.tokens) == cset.fits[0].tokens <= 300
    assert all(im.shape[1] <= cset.fits[0].cap and im.shape[2] <= cset.fits[0].cap for im in encoded.images)
    assert cset.content_hash != load_set(str(path), "v7m1").content_hash


def test_everything_dropped_is_an_error(tmp_path):
    path = write_manifest(tmp_path, [sample_row("long", "word " * 400)])
    with pytest.raises(InputError, match="no sample is left"):
        load_set(str(path), "v7m1", max_tokens=50)



def test_messages_refuse_an_image_changed_after_loading(tmp_path):
    path = write_manifest(tmp_path, [sample_row("a", {"path": "images/x.png"}, "q")], {"x.png": image_bytes()})
    cset = load_set(str(path), "v7m1")
    assert cset.messages(0)[0]["content"][0]["image"].size == (40, 24)
    (tmp_path / "images" / "x.png").write_bytes(image_bytes("RGB", (41, 24)))
    with pytest.raises(InputError, match="changed after the set was loaded"):
        cset.messages(0)
