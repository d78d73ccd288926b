"""Write the small audio (and image) files the examples in ``examples/`` send.

Generated here, never downloaded: sine tones as WAV and tiny PNGs
(``batcher.devrelay.media.sample_wav`` / ``sample_png``).
Run from the repository's root: ``python scripts/example_media.py``.
"""

from __future__ import annotations

from pathlib import Path

from batcher.devrelay.media import sample_png, sample_wav

MEDIA = Path(__file__).resolve().parent.parent / "examples" / "media"


def main() -> None:
    MEDIA.mkdir(exist_ok=True)
    (MEDIA / "tone-1s.wav").write_bytes(sample_wav(1.0, tone=440))
    (MEDIA / "tone-2s.wav").write_bytes(sample_wav(2.0, rate=4000, tone=330))
    (MEDIA / "square.png").write_bytes(sample_png("square", side=16))
    (MEDIA / "mask.png").write_bytes(sample_png("mask", side=16))
    print(f"wrote {', '.join(sorted(p.name for p in MEDIA.iterdir()))} in {MEDIA}")


if __name__ == "__main__":
    main()
