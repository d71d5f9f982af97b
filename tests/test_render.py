"""Offline render end to end: deterministic files, the seed then the answer, on the beat."""

from __future__ import annotations

import pytest

from livegen.cli import main
from livegen.music.midifile import read_midi
from tests.pkgfactory import SEED_NOTES, write_package


@pytest.fixture
def package_dir(tmp_path):
    return write_package(tmp_path / "pkg")


def render(package_dir, tmp_path, name, seed=1, bars=2, extra=()):
    out = tmp_path / name
    code = main(
        [
            "render", "--model", str(package_dir), "--seed-file", str(package_dir / "seed.mid"),
            "--bars", str(bars), "--out", str(out), "--rng-seed", str(seed), *extra,
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_render_is_deterministic_per_seed(package_dir, tmp_path):
    a = render(package_dir, tmp_path, "a.mid", seed=1).read_bytes()
    b = render(package_dir, tmp_path, "b.mid", seed=1).read_bytes()
    c = render(package_dir, tmp_path, "c.mid", seed=2).read_bytes()
    assert a == b
    assert a != c


def test_render_holds_seed_then_answer_within_its_bars(package_dir, tmp_path):
    song = read_midi(render(package_dir, tmp_path, "o.mid", bars=2))
    performer = [n for n in song.notes if n.channel == 0 and n.start < 8 * 240]
    assert [(n.pitch, n.start) for n in performer][: len(SEED_NOTES)] == [(n.pitch, n.start) for n in SEED_NOTES]
    answer = [n for n in song.notes if n.start >= SEED_NOTES[-1].end]
    assert answer, "the model answered"
    # Two beats of silence after the seed's last release, then the answer on the 16th grid, for 2 bars.
    start = -(-(SEED_NOTES[-1].end + 960) // 120) * 120
    assert min(n.start for n in answer) == start
    assert max(n.end for n in answer) <= start + 2 * 4 * 480
    assert all(n.start % 120 == 0 for n in answer)


def test_render_writes_audio_with_the_builtin_synth(package_dir, tmp_path):
    wav = tmp_path / "o.wav"
    render(package_dir, tmp_path, "o.mid", extra=("--wav", str(wav)))
    import wave

    with wave.open(str(wav)) as w:
        assert w.getframerate() == 48000 and w.getnchannels() == 2
        assert w.getnframes() > 48000 * 3
