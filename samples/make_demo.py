"""Build vidface's demo clip and gallery from public-domain portraits shipped in PyPI packages.

- Eileen Collins: scikit-image's ``data.astronaut()`` (NASA, public domain).
- Grace Hopper: matplotlib's ``grace_hopper.jpg`` sample (US Navy, public domain).

The clip shows the two portraits drifting over a background, at slightly
changing scale, with a soft tone as its audio track. The gallery holds other
views of the same people: different crops, mirror images, small rotations,
other lighting, so that matching is not pixel identity.

    pip install -e '.[samples]'
    python samples/make_demo.py            # writes samples/demo.mp4 and samples/gallery/
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = (640, 360)
FPS = 15
SECONDS = 4


def portraits() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    from skimage import data

    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        hopper = cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR)
    return {
        "Eileen Collins": astronaut[0:300, 90:330],  # head and shoulders
        "Grace Hopper": hopper[0:420, 90:420],
    }


def gallery_views(image: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    views = []
    height, width = image.shape[:2]
    for index in range(4):
        crop = image[int(rng.uniform(0, 0.08) * height) : int(rng.uniform(0.9, 1.0) * height),
                     int(rng.uniform(0, 0.08) * width) : int(rng.uniform(0.92, 1.0) * width)]
        if index % 2:
            crop = crop[:, ::-1]
        angle = rng.uniform(-8, 8)
        matrix = cv2.getRotationMatrix2D((crop.shape[1] / 2, crop.shape[0] / 2), angle, 1.0)
        crop = cv2.warpAffine(np.ascontiguousarray(crop), matrix, (crop.shape[1], crop.shape[0]),
                              borderMode=cv2.BORDER_REFLECT)
        crop = np.clip(crop.astype(np.float32) * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20), 0, 255)
        views.append(crop.astype(np.uint8))
    return views


def background(frame: int) -> np.ndarray:
    width, height = SIZE
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    phase = frame / (FPS * SECONDS)
    image = np.zeros((height, width, 3), np.float32)
    image[..., 0] = 120 + 60 * np.sin(2 * np.pi * (x + phase))
    image[..., 1] = 90 + 50 * y
    image[..., 2] = 60 + 40 * np.cos(2 * np.pi * (y + x / 2))
    return image.astype(np.uint8)


def paste(canvas: np.ndarray, sprite: np.ndarray, centre: tuple[float, float], height: int) -> None:
    scale = height / sprite.shape[0]
    sprite = cv2.resize(sprite, (max(1, int(sprite.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
    h, w = sprite.shape[:2]
    x0, y0 = int(centre[0] - w / 2), int(centre[1] - h / 2)
    xs, ys = max(0, x0), max(0, y0)
    xe, ye = min(canvas.shape[1], x0 + w), min(canvas.shape[0], y0 + h)
    if xe > xs and ye > ys:
        canvas[ys:ye, xs:xe] = sprite[ys - y0 : ye - y0, xs - x0 : xe - x0]


def write_clip(path: Path, people: dict[str, np.ndarray]) -> None:
    frames = FPS * SECONDS
    sample_rate = 16000
    per_frame = sample_rate // FPS
    temporary = path.with_name("." + path.name + ".tmp.mp4")
    with av.open(str(temporary), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"crf": "28", "preset": "veryslow"})
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        audio = container.add_stream("aac", rate=sample_rate)
        collins, hopper = people["Eileen Collins"], people["Grace Hopper"]
        for index in range(frames):
            t = index / frames
            canvas = background(index)
            paste(canvas, collins, (150 + 120 * t, 190 + 15 * np.sin(6 * t)), int(250 - 40 * t))
            paste(canvas, hopper, (500 - 110 * t, 170 + 20 * np.cos(5 * t)), int(200 + 60 * t))
            for packet in video.encode(av.VideoFrame.from_ndarray(canvas, format="bgr24")):
                container.mux(packet)
            seconds = (np.arange(per_frame) + index * per_frame) / sample_rate
            tone = (0.1 * np.sin(2 * np.pi * 330 * seconds) * np.minimum(1, seconds * 4)).astype(np.float32)
            audio_frame = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
            audio_frame.sample_rate, audio_frame.pts = sample_rate, index * per_frame
            audio_frame.time_base = Fraction(1, sample_rate)
            for packet in audio.encode(audio_frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    temporary.replace(path)


def main() -> None:
    people = portraits()
    for seed, (name, image) in enumerate(people.items()):
        folder = HERE / "gallery" / name
        folder.mkdir(parents=True, exist_ok=True)
        for index, view in enumerate(gallery_views(image, seed)):
            cv2.imwrite(str(folder / f"{index + 1:02d}.jpg"), view, [cv2.IMWRITE_JPEG_QUALITY, 85])
    write_clip(HERE / "demo.mp4", people)
    print(f"wrote {HERE / 'demo.mp4'} and {HERE / 'gallery'}")


if __name__ == "__main__":
    main()
