"""Train vidface's face embedder: EfficientNet-B0 + ArcFace + distillation from dlib.

Labelled crops teach identities through an ArcFace margin head; every crop
(labelled or not) also teaches the student to reproduce the dlib teacher's
embedding through a small projection (cosine distillation), so the student
learns the teacher's function from far more faces than it has labels for.
The recipe lives in a JSON config file (``configs/embedder-*.json``).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..datasets import data_root
from ...errors import DataError
from ...embed import EmbedderConfig, unit_embeddings, update_embedder_config
from ...embed_net import EmbedderNet, crops_to_tensor, load_embedder_net, save_embedder


@dataclass
class EmbedderTrainConfig:
    """Every setting of a training run (read from / written to JSON)."""

    labelled_sets: list[str] = field(default_factory=lambda: ["faces/celeba299"])
    unlabelled_sets: list[str] = field(default_factory=lambda: ["faces/utkface4k"])
    teacher_cache: str = "cache/teacher/dlib_faces.npz"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    arcface_scale: float = 32.0
    arcface_margin: float = 0.4
    easy_margin: bool = False
    arcface_weight: float = 1.0
    distill_weight: float = 4.0
    #: weight of the relational loss: the student's in-batch cosine-similarity matrix (full embedding,
    #: batch-centred) against the teacher's, so the whole embedding takes the teacher's geometry
    relational_weight: float = 0.0
    embedding_size: int = 512
    dropout: float = 0.2
    eval_every: int = 2
    flip_p: float = 0.5
    jitter_p: float = 0.8
    blur_p: float = 0.2
    jpeg_p: float = 0.3
    occlusion_p: float = 0.25
    affine_p: float = 0.5
    #: probability of a colour cast: each channel scaled by its own gain in ``1 ± colour_cast`` (a tinted
    #: film, a white balance gone wrong); what luminance normalisation cannot undo, so the network learns it
    colour_cast_p: float = 0.0
    colour_cast: float = 0.25
    #: the crops' normalisation before the network (:attr:`vidface.embed.EmbedderConfig.crop_normalisation`):
    #: trained as it runs, and written into the shipped JSON; ``None`` (runs before 2026-12-03): crops as they come
    crop_normalisation: str | None = None
    #: the crops whose mean output the shipped embedder subtracts (its ``centre``): faces aligned the way the
    #: pipeline aligns them, so the candidate is measured as it would ship; ``None``: the training crops, whose
    #: mean leans to CelebA and flatters the CelebA hold-out (run 14: held-out 0.9815 against 0.9796, LFW -0.8 pt)
    centre_set: str | None = "cache/faces-wider"
    workers: int = 1
    threads: int = 0
    #: decode every crop once into memory (about 38 kB a crop) instead of reading JPEGs each epoch
    preload: bool = False
    #: channels-last tensors: about a third faster for EfficientNet's depthwise convolutions on CPU
    channels_last: bool = False
    amp: bool = True
    #: bfloat16 autocast on the CPU (AVX-512 BF16 / AMX): faster steps, fp32 master weights and loss
    cpu_bf16: bool = False
    #: people kept out of training to calibrate open-set decisions on faces the model never saw:
    #: every ``calibration_every``-th person (sorted ids) of ``calibration_set`` with at least
    #: ``calibration_min_crops`` crops; 0 keeps everyone in training
    calibration_set: str = "faces/celeba5k"
    calibration_every: int = 0
    calibration_min_crops: int = 18
    #: where a new schedule starts: "random", or "imagenet" (EfficientNet-Lite0's ImageNet weights,
    #: see :mod:`vidface.train.imagenet_init`); ``--init CHECKPOINT`` overrides it
    init: str = "random"
    #: how a new schedule starts the ArcFace head: "random" (Xavier), or "centroids": each class's
    #: mean normalised embedding under the starting network, so that turning ArcFace on over an
    #: already trained network starts from its own geometry instead of 5,000 random directions
    head_init: str = "random"
    seed: int = 0

    @classmethod
    def load(cls, path: Path) -> "EmbedderTrainConfig":
        return cls(**json.loads(Path(path).read_text()))


class ArcFaceHead(nn.Module):
    """Additive angular margin: logits ``s * cos(theta + m)`` for the true class, ``s * cos(theta)`` otherwise.

    Past ``theta > pi - m`` the margin would make the logit grow again; there the
    usual fallback ``cos(theta) - m * sin(m)`` keeps it monotonic. With
    ``easy_margin`` the margin only applies where ``cos(theta) > 0``.
    """

    def __init__(self, embedding_size: int, classes: int, scale: float = 32.0, margin: float = 0.4,
                 easy_margin: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin, self.easy_margin = scale, margin, easy_margin
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)
        self.fallback = math.sin(math.pi - margin) * margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        sine = torch.sqrt(1.0 - cosine * cosine)
        with_margin = cosine * self.cos_m - sine * self.sin_m
        if self.easy_margin:
            with_margin = torch.where(cosine > 0, with_margin, cosine)
        else:
            with_margin = torch.where(cosine > self.threshold, with_margin, cosine - self.fallback)
        one_hot = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
        return self.scale * (one_hot * with_margin + (1 - one_hot) * cosine)


def augment(crop: np.ndarray, config: EmbedderTrainConfig, rng: random.Random) -> np.ndarray:
    """Flip, colour, pose/scale jitter, blur, JPEG and occlusion on an aligned BGR crop."""
    image = crop
    size = image.shape[0]
    if rng.random() < config.flip_p:
        image = image[:, ::-1]
    if rng.random() < config.affine_p:
        angle, scale = rng.uniform(-10, 10), rng.uniform(0.9, 1.1)
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
        matrix[:, 2] += (rng.uniform(-4, 4), rng.uniform(-4, 4))
        image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), borderMode=cv2.BORDER_CONSTANT)
    image = image.astype(np.float32)
    if rng.random() < config.jitter_p:
        image = image * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
        grey = image.mean(axis=2, keepdims=True)
        image = grey + (image - grey) * rng.uniform(0.5, 1.5)
    if rng.random() < config.colour_cast_p:
        image = image * np.array([rng.uniform(1 - config.colour_cast, 1 + config.colour_cast) for _ in range(3)],
                                 np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < config.blur_p:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.8))
    if rng.random() < config.jpeg_p:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(25, 90)])
        if ok:
            image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if rng.random() < config.occlusion_p:
        h, w = rng.randint(size // 6, size // 2), rng.randint(size // 6, size // 2)
        y, x = rng.randint(0, size - h), rng.randint(0, size - w)
        image = image.copy()
        image[y : y + h, x : x + w] = rng.randint(0, 255)
    return np.ascontiguousarray(image)


class FaceCropDataset(torch.utils.data.Dataset):
    """Aligned crops with an identity label (``-1`` when unlabelled) and a teacher embedding."""

    def __init__(self, paths: list[Path], labels: list[int], teacher: np.ndarray, config: EmbedderTrainConfig,
                 embed_config: EmbedderConfig):
        self.paths, self.labels, self.teacher = paths, labels, teacher
        self.config, self.embed_config = config, embed_config
        self.crops = load_crops(paths, embed_config.input_size) if config.preload else None

    def __len__(self) -> int:
        return len(self.paths)

    def crop(self, index: int) -> np.ndarray:
        """The aligned BGR crop, not augmented."""
        return self.crops[index] if self.crops is not None else cv2.imread(str(self.paths[index]), cv2.IMREAD_COLOR)

    def __getitem__(self, index: int):
        crop = augment(self.crop(index), self.config, random.Random())
        tensor = crops_to_tensor([crop], self.embed_config)[0]
        return tensor, self.labels[index], torch.from_numpy(self.teacher[index])


def embedder_config_for(config: EmbedderTrainConfig) -> EmbedderConfig:
    """The runtime config a run trains under and ships (architecture and the crops' preparation)."""
    from ...embed import CROP_NORMALISATIONS

    if config.crop_normalisation not in CROP_NORMALISATIONS:
        raise ValueError(f"crop_normalisation {config.crop_normalisation!r}: choose one of {CROP_NORMALISATIONS}")
    return EmbedderConfig(embedding_size=config.embedding_size, dropout=config.dropout,
                          crop_normalisation=config.crop_normalisation)


def load_crops(paths: list[Path], size: int) -> np.ndarray:
    """``uint8 (N, size, size, 3)`` BGR crops, read once."""
    crops = np.empty((len(paths), size, size, 3), np.uint8)
    for index, path in enumerate(paths):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"training crop {path} cannot be read")
        crops[index] = image if image.shape[:2] == (size, size) else cv2.resize(image, (size, size))
    return crops


def relational_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the off-diagonal in-batch cosine similarities.

    ``student`` ``(B, D)`` raw embeddings are centred on the batch mean (as the
    shipped embedder subtracts its stored centre) before normalising;
    ``teacher`` ``(B, T)`` vectors are already centred unit vectors.
    """
    student = F.normalize(student - student.mean(dim=0, keepdim=True), dim=1)
    teacher = F.normalize(teacher, dim=1)
    difference = student @ student.T - teacher @ teacher.T
    off_diagonal = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    return difference[off_diagonal].pow(2).mean()


def gather_training_data(config: EmbedderTrainConfig, root: Path | None = None):
    """Paths, labels (``-1`` = unlabelled) and teacher vectors of every training crop, and how many people."""
    from .dlib_teacher import teacher_cache

    root = root or data_root()
    paths, labels, people = training_crops(config, root)
    cache_root = root / "faces"
    _, teacher = teacher_cache(paths, cache_root, Path(config.teacher_cache))
    return paths, labels, centre_teacher(teacher), people


def training_crops(config: EmbedderTrainConfig, root: Path | None = None) -> tuple[list[Path], list[int], int]:
    """Paths and labels (``-1`` = unlabelled) of every training crop (people held out for calibration left
    out), and how many labelled people they hold."""
    root = root or data_root()
    for banned in ("lfw", "videofaceid"):
        if any(banned in s for s in config.labelled_sets + config.unlabelled_sets):
            raise ValueError(f"{banned} is an evaluation set and must not be trained on")
    paths, labels, identities = [], [], {}
    held_out = set(calibration_people(config, root))
    for labelled in config.labelled_sets:
        for person_dir in sorted(_crop_folder(labelled, root).iterdir()):
            if person_dir.is_dir() and person_dir not in held_out:
                for crop in crop_files(person_dir):
                    paths.append(crop)
                    # one namespace across labelled sets: celeba299 and celeba5k share CelebA's ids
                    labels.append(identities.setdefault(person_dir.name, len(identities)))
    for unlabelled in config.unlabelled_sets:
        crops = crop_files(_crop_folder(unlabelled, root))
        paths += crops
        labels += [-1] * len(crops)
    return paths, labels, len(identities)


def centre_crops(config: EmbedderTrainConfig, training_paths: list[Path], root: Path | None = None) -> list[Path]:
    """The crops the trained embedder's ``centre`` is the mean output of (see ``centre_set``)."""
    if config.centre_set is None:
        return training_paths
    crops = crop_files(_crop_folder(config.centre_set, root or data_root()))
    if not crops:
        raise DataError(f"centre set {config.centre_set!r} holds no aligned crops")
    return crops


def calibration_people(config: EmbedderTrainConfig, root: Path | None = None) -> list[Path]:
    """The person folders held out of training for open-set calibration (see ``calibration_every``)."""
    if not config.calibration_every:
        return []
    folder = _crop_folder(config.calibration_set, root or data_root())
    eligible = [d for d in sorted(folder.iterdir()) if d.is_dir() and len(crop_files(d)) >= config.calibration_min_crops]
    return eligible[:: config.calibration_every]


CROP_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def crop_files(folder: Path) -> list[Path]:
    """The aligned crops directly in ``folder`` (JPEG, PNG or WebP), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CROP_SUFFIXES)


def _crop_folder(name: str, root: Path) -> Path:
    """A set named in the config: a folder under the shared data root, or else a path of our own
    (for example ``cache/faces-wider`` made by ``vidface data wider-crops``)."""
    folder = root / name if (root / name).is_dir() else Path(name)
    if not folder.is_dir():
        made_by = " (made by `vidface data wider-crops`)" if name.startswith("cache/") else ""
        raise DataError(f"training set {name!r} is neither under {root} nor a folder here{made_by}")
    return folder


def centre_teacher(vectors: np.ndarray) -> np.ndarray:
    """Subtract the mean teacher vector and renormalise.

    dlib's descriptors of different people still have cosine ~0.8: they sit in
    a narrow cone, and a student that outputs the cone's axis for every face
    scores a low cosine loss while learning nothing. Centred, they spread over
    the sphere and the cosine loss carries identity.
    """
    return unit_embeddings(vectors, vectors.mean(axis=0))


def store_embedding_centre(weights: Path, crop_paths: list[Path], limit: int = 4000, seed: int = 0) -> np.ndarray:
    """Measure the mean raw embedding of (up to ``limit``) aligned crops and write it into the weights' config.

    The student's outputs share a large constant component (the last
    BatchNorm's bias); subtracting it before normalisation lets cosine
    similarity measure what differs between faces.
    """
    from ...embed import FaceEmbedder

    chosen = random.Random(seed).sample(list(crop_paths), min(limit, len(crop_paths)))
    embedder = FaceEmbedder(weights, "cpu")
    total, count = np.zeros(embedder.dim, np.float64), 0
    for start in range(0, len(chosen), 256):
        crops = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in chosen[start : start + 256]]
        raw = embedder.raw([crop for crop in crops if crop is not None])
        total += raw.sum(axis=0)
        count += len(raw)
    centre = (total / max(count, 1)).astype(np.float32)
    update_embedder_config(weights, centre=[float(value) for value in centre])
    return centre


def average_embedders(sources: list[Path], out: Path) -> Path:
    """A uniform weight soup: the element-wise mean of several fine-tunes of one network, written to ``out``.

    Floating-point tensors (weights and batch-norm statistics) are averaged;
    integer ones (batch-norm step counters) are the first source's. The
    sources must share one architecture and embedding config; the first
    one's config (threshold, centre) is copied, to be re-measured on the soup.
    """
    if len(sources) < 2:
        raise ValueError("a soup needs at least two embedders")
    nets, configs = zip(*(load_embedder_net(Path(source)) for source in sources))
    shape_of = [{name: tuple(value.shape) for name, value in net.state_dict().items()} for net in nets]
    for source, config, shapes in zip(sources[1:], configs[1:], shape_of[1:]):
        if (config.arch, config.embedding_size, config.input_size) != (configs[0].arch, configs[0].embedding_size,
                                                                       configs[0].input_size) or shapes != shape_of[0]:
            raise ValueError(f"{source} is not the same network as {sources[0]}")
    states = [net.state_dict() for net in nets]
    soup = {name: (torch.stack([state[name] for state in states]).mean(dim=0) if value.is_floating_point()
                   else value.clone())
            for name, value in states[0].items()}
    nets[0].load_state_dict(soup)
    return save_embedder(nets[0].eval(), configs[0], Path(out))


@dataclass
class Student:
    """The network being trained with its ArcFace head, distillation projector and optimizer."""

    config: EmbedderTrainConfig
    net: EmbedderNet
    head: ArcFaceHead
    projector: nn.Linear
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device

    @classmethod
    def build(cls, config: EmbedderTrainConfig, embed_config: EmbedderConfig, classes: int, teacher_dim: int,
              device: torch.device) -> "Student":
        net = EmbedderNet(embed_config).to(device, memory_format=cls._memory_format(config))
        head = ArcFaceHead(config.embedding_size, max(classes, 1), config.arcface_scale, config.arcface_margin,
                           config.easy_margin).to(device)
        projector = nn.Linear(config.embedding_size, teacher_dim).to(device)
        parameters = list(net.parameters()) + list(head.parameters()) + list(projector.parameters())
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
        return cls(config, net, head, projector, optimizer, scaler, device)

    @staticmethod
    def _memory_format(config: EmbedderTrainConfig) -> torch.memory_format:
        return torch.channels_last if config.channels_last else torch.contiguous_format

    def train(self) -> None:
        self.net.train(), self.head.train(), self.projector.train()

    def step(self, images: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor) -> tuple[float, float, float]:
        """One optimizer step on a batch: ``images (B, 3, S, S)``, ``labels (B,)`` (-1 unlabelled), ``teacher
        (B, T)`` centred unit vectors. Returns the (ArcFace, distillation, relational) losses."""
        config, device = self.config, self.device
        images = images.to(device, memory_format=self._memory_format(config))
        labels, teacher = labels.to(device), teacher.to(device)
        fp16 = config.amp and device.type == "cuda"
        bf16 = config.cpu_bf16 and device.type == "cpu"
        with torch.autocast(device.type, dtype=torch.float16 if fp16 else torch.bfloat16, enabled=fp16 or bf16):
            embeddings = self.net(images)
        embeddings = embeddings.float()
        distill = (1 - F.cosine_similarity(self.projector(embeddings), teacher)).mean()
        relational = torch.zeros((), device=device)
        if config.relational_weight:
            relational = relational_loss(embeddings, teacher)
        labelled = labels >= 0
        arcface = torch.zeros((), device=device)
        if config.arcface_weight and labelled.any():
            arcface = F.cross_entropy(self.head(embeddings[labelled], labels[labelled]), labels[labelled])
        loss = config.arcface_weight * arcface + config.distill_weight * distill + config.relational_weight * relational
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return arcface.item(), distill.item(), relational.item()


@torch.no_grad()
def plain_embeddings(net: EmbedderNet, dataset: "FaceCropDataset", indices: list[int], device: torch.device,
                     batch_size: int = 256) -> torch.Tensor:
    """``float32 (len(indices), D)`` raw embeddings (on the CPU) of the dataset's un-augmented crops at
    ``indices``, in eval mode; the network is handed back in the mode it came in."""
    was_training = net.training
    net.eval()
    embeddings = []
    for start in range(0, len(indices), batch_size):
        crops = [dataset.crop(int(index)) for index in indices[start : start + batch_size]]
        embeddings.append(net(crops_to_tensor(crops, dataset.embed_config).to(device)).float().cpu())
    net.train(was_training)
    return torch.cat(embeddings) if embeddings else torch.zeros(0, dataset.embed_config.embedding_size)


def class_centroids(net: EmbedderNet, dataset: "FaceCropDataset", classes: int, device: torch.device,
                    batch_size: int = 256) -> torch.Tensor:
    """``(classes, D)`` unit vectors: each labelled class's mean normalised embedding of its un-augmented crops."""
    labels = torch.as_tensor(dataset.labels)
    labelled = torch.nonzero(labels >= 0).flatten().tolist()
    embeddings = F.normalize(plain_embeddings(net, dataset, labelled, device, batch_size), dim=1)
    sums = torch.zeros(classes, dataset.embed_config.embedding_size).index_add_(0, labels[labelled], embeddings)
    return F.normalize(sums, dim=1).to(device)


@torch.no_grad()
def fit_projector(net: EmbedderNet, projector: nn.Linear, dataset: "FaceCropDataset", device: torch.device,
                  limit: int = 4096, batch_size: int = 256, seed: int = 0) -> float:
    """Set ``projector`` to the least-squares map from the network's (un-augmented) embeddings of up to
    ``limit`` training crops to their teacher vectors; returns the mean cosine it reaches there.

    Shipped weights keep only the network: a random projector would send large, meaningless
    distillation gradients into a trained network during the first steps of a new schedule.
    """
    chosen = np.random.default_rng(seed).choice(len(dataset), min(limit, len(dataset)), replace=False)
    inputs = plain_embeddings(net, dataset, chosen.tolist(), device, batch_size).double()
    targets = torch.from_numpy(dataset.teacher[chosen]).double()
    with_bias = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], dim=1)
    # a small ridge keeps the solve stable when there are fewer crops than embedding dimensions
    gram = with_bias.T @ with_bias + 1e-3 * torch.eye(with_bias.shape[1], dtype=inputs.dtype)
    solution = torch.linalg.solve(gram, with_bias.T @ targets)
    projector.weight.copy_(solution[:-1].T.float())
    projector.bias.copy_(solution[-1].float())
    return float(F.cosine_similarity(with_bias @ solution, targets).mean())


def start_from_shipped_weights(student: "Student", weights: Path, dataset: "FaceCropDataset") -> float:
    """A new schedule from a shipped ``.safetensors`` embedder (no head, no projector, no optimizer in it)."""
    from ...embed_net import load_embedder_net

    shipped, shipped_config = load_embedder_net(weights)
    if shipped_config.embedding_size != student.config.embedding_size:
        raise ValueError(f"{weights} embeds to {shipped_config.embedding_size} dimensions, the config to "
                         f"{student.config.embedding_size}")
    student.net.load_state_dict(shipped.state_dict())
    return fit_projector(student.net, student.projector, dataset, student.device, seed=student.config.seed)


def _lr_at(step: float, total: float, warmup: float, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1.0, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_embedder(config: EmbedderTrainConfig, run_dir: Path, device: str = "cpu", resume: bool = False,
                   log=print, init: Path | None = None) -> Path:
    """Train, evaluating on LFW every ``eval_every`` epochs (for the log only: the last epoch is kept).

    ``resume`` continues ``run_dir/last.ckpt`` where it stopped (optimizer,
    schedule position and epoch; without it an existing checkpoint is an
    error); ``init`` (used only when there is nothing to resume) starts a new
    schedule from another run's weights, else ``config.init`` decides.
    """
    from ...embed import FaceEmbedder
    from ..evaluation.lfw import evaluate_lfw, load_lfw_bin

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    paths, labels, teacher, classes = gather_training_data(config)
    centred_on = centre_crops(config, paths)  # looked up now, not after hours of training
    embed_config = embedder_config_for(config)
    dataset = FaceCropDataset(paths, labels, teacher, config, embed_config)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                         num_workers=config.workers, persistent_workers=config.workers > 0)
    student = Student.build(config, embed_config, classes, teacher.shape[1], torch.device(device))
    net, head, projector, optimizer, target = (student.net, student.head, student.projector, student.optimizer,
                                               student.device)
    start_epoch = 0
    checkpoint = run_dir / "last.ckpt"
    if checkpoint.exists() and not resume:
        raise FileExistsError(f"{checkpoint} exists: resume it (--resume) or choose another --run folder")
    source = checkpoint if resume and checkpoint.exists() else init
    if source is None and config.init == "imagenet":
        from .imagenet_init import load_lite0_into

        report = load_lite0_into(net.features)
        log(f"initialised from ImageNet EfficientNet-Lite0: {len(report.loaded)} tensors, "
            f"{report.opened_gates} squeeze-excitation gates opened")
    elif source is None and config.init != "random":
        raise ValueError(f"unknown init {config.init!r} (random or imagenet)")
    if source is not None and source != checkpoint and source.suffix == ".safetensors":
        start_from_shipped_weights(student, source, dataset)
        log(f"initialised from {source} (network only; distillation projector fitted by least squares)")
    elif source is not None:
        state = torch.load(source, map_location=target, weights_only=True)
        for module, key in ((net, "net"), (head, "head"), (projector, "projector")):
            module.load_state_dict(state[key])
        if source == checkpoint:
            optimizer.load_state_dict(state["optimizer"])
            start_epoch = int(state["epoch"])
            log(f"resumed from {checkpoint} at epoch {start_epoch}")
        else:
            log(f"initialised from {init} (trained {int(state['epoch'])} epochs there)")
    if source != checkpoint and config.head_init == "centroids" and classes:
        head.weight.data.copy_(class_centroids(net, dataset, classes, target))
        log(f"ArcFace head started from the centroids of {classes} people")
    elif source != checkpoint and config.head_init != "random":
        raise ValueError(f"unknown head_init {config.head_init!r} (random or centroids)")
    lfw_images, lfw_same = None, None
    history_file = run_dir / "history.jsonl"
    steps_per_epoch = len(loader)
    for epoch in range(start_epoch, config.epochs):
        student.train()
        started, seen, totals = time.time(), 0, {"arcface": 0.0, "distill": 0.0, "relational": 0.0}
        for step, (images, batch_labels, teacher_vectors) in enumerate(loader):
            global_step = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(global_step, config.epochs * steps_per_epoch,
                                     config.warmup_epochs * steps_per_epoch, config.lr)
            arcface, distill, relational = student.step(images, batch_labels, teacher_vectors)
            seen += len(images)
            totals["arcface"] += arcface * len(images)
            totals["distill"] += distill * len(images)
            totals["relational"] += relational * len(images)
            if step % 10 == 0:
                rate = seen / (time.time() - started)
                log(f"epoch {epoch + 1}/{config.epochs} step {step}/{steps_per_epoch} arcface {arcface:.3f} "
                    f"distill {distill:.4f} relational {relational:.4f} ({rate:.1f} img/s)")
        record = {"epoch": epoch + 1, "seconds": round(time.time() - started, 1),
                  **{k: round(v / max(seen, 1), 4) for k, v in totals.items()}}
        torch.save({"net": net.state_dict(), "head": head.state_dict(), "projector": projector.state_dict(),
                    "optimizer": optimizer.state_dict(), "epoch": epoch + 1}, run_dir / "last.ckpt.tmp")
        (run_dir / "last.ckpt.tmp").replace(checkpoint)
        save_embedder(net.cpu().eval(), embed_config, run_dir / "embedder.safetensors")
        if epoch + 1 == config.epochs:
            store_embedding_centre(run_dir / "embedder.safetensors", centred_on, seed=config.seed)
        net.to(target)
        if config.eval_every and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
            if lfw_images is None:
                lfw_images, lfw_same = load_lfw_bin()
            report = evaluate_lfw(FaceEmbedder(run_dir / "embedder.safetensors", target), lfw_images, lfw_same)
            record.update(lfw_accuracy=round(report.accuracy_mean, 4),
                          lfw_best_threshold=round(report.best_threshold, 4), lfw_best_f1=round(report.best_f1, 4))
        log(json.dumps(record))
        with open(history_file, "a") as stream:
            stream.write(json.dumps(record) + "\n")
    return run_dir / "embedder.safetensors"


@dataclass
class StepSpeed:
    """One variant of :func:`measure_step_speed`: throughput and where the loss got to."""

    variant: str
    images_per_s: float
    first_loss: float
    last_loss: float


def measure_step_speed(config: EmbedderTrainConfig, crops: np.ndarray, teacher: np.ndarray, steps: int = 12,
                       warmup: int = 2, variants: tuple[str, ...] = ("fp32", "fp32+cl", "bf16", "bf16+cl"),
                       log=print) -> list[StepSpeed]:
    """Train the same start weights on the same batches in each numeric variant (``fp32``/``bf16``
    autocast, ``+cl`` channels-last) on the CPU; images/s over the steps after ``warmup``, and the
    distillation loss at the start and after the last step.

    ``crops`` ``uint8 (N, S, S, 3)`` aligned BGR crops, ``teacher`` ``(N, T)`` centred unit vectors.
    """
    from dataclasses import replace

    embed_config = embedder_config_for(config)
    generator = np.random.default_rng(config.seed)
    batches = [generator.choice(len(crops), config.batch_size, replace=False) for _ in range(warmup + steps)]
    torch.manual_seed(config.seed)
    reference = Student.build(config, embed_config, 1, teacher.shape[1], torch.device("cpu"))
    if config.init == "imagenet":
        from .imagenet_init import load_lite0_into

        load_lite0_into(reference.net.features)
    start = {key: module.state_dict() for key, module in
             (("net", reference.net), ("projector", reference.projector))}
    results = []
    for variant in variants:
        variant_config = replace(config, cpu_bf16=variant.startswith("bf16"), channels_last=variant.endswith("+cl"),
                                 arcface_weight=0.0)
        torch.manual_seed(config.seed)
        student = Student.build(variant_config, embed_config, 1, teacher.shape[1], torch.device("cpu"))
        student.net.load_state_dict(start["net"])
        student.projector.load_state_dict(start["projector"])
        student.train()
        losses, started = [], 0.0
        for index, chosen in enumerate(batches):
            if index == warmup:
                started = time.perf_counter()
            images = crops_to_tensor(crops[chosen], embed_config)
            losses.append(student.step(images, torch.full((len(chosen),), -1), torch.from_numpy(teacher[chosen]))[1])
        rate = steps * config.batch_size / (time.perf_counter() - started)
        results.append(StepSpeed(variant, round(rate, 1), round(losses[0], 4), round(losses[-1], 4)))
        log(f"{variant}: {rate:.1f} img/s, distillation loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    return results


def pack_training_faces(config: EmbedderTrainConfig, out_dir: Path, max_bytes: int, root: Path | None = None
                        ) -> list[Path]:
    """Zip parts (each at most ``max_bytes``) of every training crop, the calibration people and the teacher
    cache, named as :func:`gather_training_data` finds them under a data root, and with ``init``
    ``imagenet`` the Lite0 start weights (as ``models/``, where :func:`lite0_weights_path` finds them).

    Stored, not deflated (the crops are JPEG and WebP already): a zip entry costs about 100
    bytes against a tar member's 512-byte header and block padding (about 20 MiB over 29k
    crops). The teacher cache goes in as a compressed npz (its names array is mostly zeros).
    Unpack with ``python3 -m zipfile -e PART DEST``.
    """
    import tempfile
    import zipfile

    root = root or data_root()
    files: list[tuple[Path, str]] = []
    for name in config.labelled_sets + config.unlabelled_sets + [config.calibration_set]:
        folder = _crop_folder(name, root)
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in CROP_SUFFIXES:
                files.append((path, str(Path(name) / path.relative_to(folder))))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        teacher = Path(config.teacher_cache)
        if teacher.is_file():
            with np.load(teacher, allow_pickle=False) as cached:
                compact = Path(scratch) / "teacher.npz"
                np.savez_compressed(compact, **{key: cached[key] for key in cached.files})
            files.append((compact, str(teacher)))
        if config.init == "imagenet":
            from .imagenet_init import LITE0_FILE, lite0_weights_path

            files.append((lite0_weights_path(), f"models/{LITE0_FILE}"))
        unique = {arcname: path for path, arcname in reversed(files)}  # the first of a name wins
        parts: list[Path] = []
        archives: list = []
        sizes: list[int] = []
        # largest first, each into the first part with room: the parts come out nearly full
        for arcname, path in sorted(unique.items(), key=lambda item: (-item[1].stat().st_size, item[0])):
            entry = path.stat().st_size + 2 * len(arcname.encode()) + 30 + 46  # local and central headers
            if entry > max_bytes - 22:
                raise ValueError(f"{path} ({entry} bytes) does not fit in a part of {max_bytes} bytes")
            slot = next((i for i, size in enumerate(sizes) if size + entry <= max_bytes - 22), None)  # 22: end record
            if slot is None:
                parts.append(out_dir / f"part-{len(parts) + 1}.zip")
                archives.append(zipfile.ZipFile(parts[-1], "w", zipfile.ZIP_STORED))
                sizes.append(0)
                slot = len(parts) - 1
            archives[slot].write(path, arcname=arcname)
            sizes[slot] += entry
        for archive in archives:
            archive.close()
    return parts
