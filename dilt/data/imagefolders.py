"""Real image data sets, read from their official on-disk formats (nothing is ever downloaded).

Each loader reads ``root/<name>/`` (``root`` is ``data/`` unless the config says otherwise):

``imagenet`` (ILSVRC-2012, 1000 classes)::

    root/imagenet/train/<wnid>/*.JPEG           the official train tar, one folder per synset
    root/imagenet/val/<wnid>/*.JPEG             validation images sorted into synset folders
                                                (the usual valprep.sh layout; torchvision ImageFolder)
    root/imagenet/LOC_synset_mapping.txt        optional: "<wnid> <name>, <synonym>, ..." per line;
                                                class names are the first name, else the wnid

  The official validation set is the test split here; our validation split is carved from train.

``cifar100`` (CIFAR-100, 100 fine classes), the python version::

    root/cifar100/cifar-100-python/train        pickles: data (N x 3072 uint8, CHW rows),
    root/cifar100/cifar-100-python/test         fine_labels, ...
    root/cifar100/cifar-100-python/meta         fine_label_names

  torchvision's ``CIFAR100`` is not used because it insists on the official md5 sums. The
  pickles are read with a restricted unpickler that only resolves the globals a numpy array
  needs (``numpy``'s ``_reconstruct``/``ndarray``/``dtype``/``scalar``/``_frombuffer`` and
  ``_codecs.encode``); anything else in the file is refused, so a tampered file cannot run code.

``stanford_cars`` (Stanford Cars, 196 classes), torchvision ``StanfordCars(download=False)`` layout::

    root/stanford_cars/cars_train/*.jpg
    root/stanford_cars/cars_test/*.jpg
    root/stanford_cars/devkit/cars_meta.mat               class_names
    root/stanford_cars/devkit/cars_train_annos.mat        annotations: fname, class (1-based), bbox
    root/stanford_cars/cars_test_annos_withlabels.mat     the same for the test images

  Whole images are used (the bounding boxes are ignored, as torchvision does).

``cub200`` (CUB-200-2011, 200 classes)::

    root/cub200/CUB_200_2011/images/<class>/*.jpg
    root/cub200/CUB_200_2011/images.txt               "<image id> <class>/<file>.jpg"
    root/cub200/CUB_200_2011/image_class_labels.txt   "<image id> <class id, 1-based>"
    root/cub200/CUB_200_2011/train_test_split.txt     "<image id> <1 train | 0 test>"
    root/cub200/CUB_200_2011/classes.txt              "<class id> <nnn.Class_name>"

Options of every loader (``dataset_options`` in the config):

``image_size`` (224)
    side of the square input.
``augment`` ("basic")
    the training-split augmentation, built with timm's ``create_transform(is_training=True)``:

    * ``none``  the eval transform on the training split too;
    * ``basic`` the standard ResNet recipe (torchvision / NVIDIA reference): RandomResizedCrop
      (scale ``min_scale``..1, bilinear) + horizontal flip;
    * ``deit``  DeiT's recipe (Touvron et al. 2021, facebookresearch/deit ``main.py`` defaults):
      RandomResizedCrop (bicubic) + flip + RandAugment ``rand-m9-mstd0.5-inc1`` + random erasing
      (p 0.25, per-pixel noise, one box); colour jitter 0.3 is passed as DeiT does, and timm drops
      it when RandAugment is on. Mixup / CutMix act on batches and belong to the training loop.

    Images already at ``image_size`` (CIFAR at 32 px) take ``RandomCrop(size, padding=4)`` in
    place of the resized crop and no resize / centre crop at evaluation, as DeiT's
    ``build_transform`` does for inputs of 32 px and the CIFAR ResNet recipes do.
``crop_fraction`` (0.875)
    evaluation resizes the short side to ``image_size / crop_fraction`` then centre-crops
    (bicubic under ``deit``, bilinear otherwise).
``min_scale`` (0.08)
    RandomResizedCrop's lower scale bound.

Tensors are normalised with the ImageNet mean and std. The validation split is carved from the
official training split with :func:`dilt.data.carve_validation` (stratified, deterministic per
``seed``); it is a view over a second dataset object on the same files that uses the eval
transform, so validation images are never augmented.

Randomness of the augmentations: torchvision's flip and timm's per-pixel erasing noise draw from
torch's global generator; timm's resized crop, RandAugment's apply-probability, magnitude noise
(``mstd``) and sign, and the erasing box draw from Python's ``random``; RandAugment picks its two
operations with NumPy's global generator (``np.random.choice``). Nothing else is random, so
seeding these three before an item is loaded (``dilt.data.loader`` does, from the epoch's seed and
the item's index) replays the same augmented images in a resumed run, whatever the workers.

CIFAR-100's superclasses (the 20 ``coarse_labels``) come with the bundle
(``DataBundle.superclasses``), for the ``semantic`` partition scheme.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import transforms as T

from dilt.data import DataBundle, carve_validation, register_dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

LAYOUTS = {
    "imagenet": "imagenet/{train,val}/<wnid>/*.JPEG [+ imagenet/LOC_synset_mapping.txt]",
    "cifar100": "cifar100/cifar-100-python/{train,test,meta} (the python-pickle version)",
    "stanford_cars": ("stanford_cars/{cars_train/,cars_test/,devkit/cars_meta.mat,"
                      "devkit/cars_train_annos.mat,cars_test_annos_withlabels.mat}"),
    "cub200": ("cub200/CUB_200_2011/{images/<class>/*.jpg,images.txt,image_class_labels.txt,"
               "train_test_split.txt,classes.txt}"),
}


def _require(path: Path, dataset: str, kind: str = "file") -> Path:
    """``path`` if it exists (a directory when ``kind == "dir"``), else a one-line error naming
    the path and the layout expected under the data root."""
    ok = path.is_dir() if kind == "dir" else path.is_file()
    if not ok:
        raise FileNotFoundError(f"{dataset}: {kind} {path} not found; expected under the data "
                                f"root: {LAYOUTS[dataset]} (see dilt/data/imagefolders.py)")
    return path


@contextlib.contextmanager
def _reading(dataset: str, path: Path, what: str = ""):
    """A failure to read or parse ``path`` (truncated, another format, missing fields) as a
    one-line error naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{dataset}: {path}{what}: unreadable or malformed ({type(e).__name__}: "
                         f"{e}); expected under the data root: {LAYOUTS[dataset]}") from None


# --- transforms --------------------------------------------------------------------------------

AUGMENTS = ("none", "basic", "deit")

# DeiT's training augmentation: the defaults of facebookresearch/deit main.py, as passed to timm
DEIT_TRAIN = {"auto_augment": "rand-m9-mstd0.5-inc1", "interpolation": "bicubic", "re_prob": 0.25,
              "re_mode": "pixel", "re_count": 1, "color_jitter": 0.3}
BASIC_TRAIN = {"interpolation": "bilinear", "color_jitter": None}


def check_augment(augment) -> str:
    """``augment`` as one of AUGMENTS (``True``/``False`` of older configs mean basic/none)."""
    if isinstance(augment, bool):
        return "basic" if augment else "none"
    if augment not in AUGMENTS:
        raise ValueError(f"augment: {augment!r} is not one of {', '.join(AUGMENTS)}")
    return augment


def check_options(options: dict) -> None:
    """The image loaders' transform options, checked (one line naming the key): the config
    check calls it before any job starts, and :func:`make_transforms` again."""
    if "augment" in options:
        check_augment(options["augment"])
    size = options.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"image_size: must be an integer >= 1, got {size!r}")
    for key in ("crop_fraction", "min_scale"):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1):
            raise ValueError(f"{key}: must be a number in (0, 1], got {v!r}")


def make_transforms(image_size: int = 224, *, augment: str = "basic", crop_fraction: float = 0.875,
                    min_scale: float = 0.08, native_size: int | None = None
                    ) -> tuple[Callable, Callable]:
    """(train, eval) transforms: PIL RGB image -> normalised float tensor (3, size, size).
    ``native_size``: the data set's own image side when all its images share one (CIFAR: 32)."""
    from timm.data import create_transform

    check_options({"image_size": image_size, "crop_fraction": crop_fraction, "min_scale": min_scale})
    augment = check_augment(augment)
    native = native_size is not None and native_size == image_size
    interpolation = "bicubic" if augment == "deit" else "bilinear"
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if native:
        evaluate = T.Compose(norm)
    else:
        evaluate = create_transform(image_size, is_training=False, interpolation=interpolation,
                                    crop_pct=crop_fraction, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if augment == "none":
        return evaluate, evaluate
    options = DEIT_TRAIN if augment == "deit" else BASIC_TRAIN
    train = create_transform(image_size, is_training=True, scale=(min_scale, 1.0),
                             mean=IMAGENET_MEAN, std=IMAGENET_STD, **options)
    if native:  # as DeiT's build_transform for 32 px inputs: pad-and-crop, no rescaling
        train.transforms[0] = T.RandomCrop(image_size, padding=4)
    _posterize_to_zero_bits(train)
    return train, evaluate


def _posterize(img, bits_to_keep, **_):
    """RandAugment's posterize as DeiT ran it: keeping 0 bits gives a black image. At magnitude
    10 (``rand-m9-mstd0.5-inc1`` samples it for about 2% of its ops) timm asks for 0 bits, which
    Pillow >= 11 refuses with a ValueError, so a long training would stop at a random image."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _posterize_to_zero_bits(transform) -> None:
    """Give the posterize ops of any RandAugment in ``transform`` the 0-bit case (in place)."""
    from timm.data.auto_augment import RandAugment

    for t in getattr(transform, "transforms", []):
        if isinstance(t, RandAugment):
            for op in t.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = _posterize


# --- datasets ----------------------------------------------------------------------------------

class FileImages(Dataset):
    """Images on disk: ``paths[i]`` with label ``targets[i]``. Paths live in one numpy string
    array (not a list of Python objects), so DataLoader workers do not copy them on access."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int], transform: Callable | None):
        self.paths = np.asarray([str(p) for p in paths])
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform
        assert len(self.paths) == len(self.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            img = im.convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])


class ArrayImages(Dataset):
    """Images in memory as a uint8 array (N, H, W, 3) with labels (CIFAR)."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], transform: Callable | None):
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform
        assert len(self.images) == len(self.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])


def _bundle(name: str, make_train: Callable[[Callable], Dataset], train_targets: np.ndarray,
            make_test: Callable[[Callable], Dataset], test_targets: np.ndarray,
            class_names: list[str], native_size: int | None = None,
            superclasses: np.ndarray | None = None, superclass_names: Sequence[str] = (), *,
            seed: int, val_fraction: float, image_size: int = 224, augment: str = "basic",
            crop_fraction: float = 0.875, min_scale: float = 0.08) -> DataBundle:
    """Build train (augmented), validation (eval transform, carved from train) and test. Its
    keyword-only parameters are the options every image loader accepts (read by the config)."""
    train_tf, eval_tf = make_transforms(image_size, augment=augment, crop_fraction=crop_fraction,
                                        min_scale=min_scale, native_size=native_size)
    train_aug = make_train(train_tf)
    train_eval = make_train(eval_tf)   # the same files, never augmented: for the validation part
    test = make_test(eval_tf)
    bundle = carve_validation(name, train_aug, np.asarray(train_targets), test,
                              np.asarray(test_targets), len(class_names),
                              (3, image_size, image_size), val_fraction, seed, class_names,
                              superclasses=superclasses, superclass_names=superclass_names)
    bundle.val = Subset(train_eval, list(bundle.val.indices))
    return bundle


def _check_labels(name: str, targets: np.ndarray, num_classes: int, source: Path) -> None:
    if len(targets) and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"{name}: labels in {source} fall outside 0..{num_classes - 1}")


# --- ImageNet ----------------------------------------------------------------------------------

def _scan_folder(directory: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    paths, targets = [], []
    for label, cls in enumerate(classes):
        cdir = directory / cls
        if not cdir.is_dir():
            continue
        files = sorted(e.name for e in os.scandir(cdir)
                       if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))
        paths.extend(str(cdir / f) for f in files)
        targets.extend([label] * len(files))
    return paths, targets


@register_dataset("imagenet")
def imagenet(root: Path, *, seed: int = 0, val_fraction: float, **options) -> DataBundle:
    """ILSVRC-2012; the official validation images are the test split."""
    base = _require(Path(root) / "imagenet", "imagenet", "dir")
    train_dir = _require(base / "train", "imagenet", "dir")
    val_dir = _require(base / "val", "imagenet", "dir")
    wnids = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if not wnids:
        raise FileNotFoundError(f"imagenet: no class folders in {train_dir}; expected under the "
                                f"data root: {LAYOUTS['imagenet']}")
    loose = sorted(e.name for e in os.scandir(val_dir)
                   if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))
    if loose:
        raise ValueError(f"imagenet: {val_dir} holds {len(loose)} image(s) outside class folders "
                         f"(e.g. {loose[0]}): sort them into <wnid>/ folders, e.g. with valprep.sh")
    val_classes = {e.name for e in os.scandir(val_dir) if e.is_dir()}
    if not val_classes:
        raise FileNotFoundError(f"imagenet: no class folders in {val_dir} (sort the validation "
                                f"images into <wnid>/ folders, e.g. with valprep.sh); expected "
                                f"under the data root: {LAYOUTS['imagenet']}")
    unknown = sorted(val_classes - set(wnids))
    if unknown:
        raise ValueError(f"imagenet: {val_dir} has class folders not in train: {unknown[:5]}")
    names = dict.fromkeys(wnids)
    mapping = base / "LOC_synset_mapping.txt"
    if mapping.is_file():
        with _reading("imagenet", mapping):
            lines = mapping.read_text().splitlines()
        for line in lines:
            wnid, _, desc = line.strip().partition(" ")
            if wnid in names and desc:
                names[wnid] = desc.split(",")[0].strip()
    class_names = [names[w] or w for w in wnids]
    tr_paths, tr_y = _scan_folder(train_dir, wnids)
    te_paths, te_y = _scan_folder(val_dir, wnids)
    for directory, ys in ((train_dir, tr_y), (val_dir, te_y)):
        empty = sorted(set(range(len(wnids))) - set(ys))
        if empty:
            raise ValueError(f"imagenet: {directory / wnids[empty[0]]} holds no images ({len(empty)} "
                             f"class(es) without images in {directory}: a partial extraction?)")
    return _bundle("imagenet", lambda tf: FileImages(tr_paths, tr_y, tf), np.asarray(tr_y),
                   lambda tf: FileImages(te_paths, te_y, tf), np.asarray(te_y), class_names,
                   seed=seed, val_fraction=val_fraction, **options)


# --- CIFAR-100 ---------------------------------------------------------------------------------

_NUMPY_GLOBALS = {
    ("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals needed to rebuild numpy arrays (and Python 2 byte strings);
    refuses every other global, so unpickling cannot call arbitrary code."""

    def find_class(self, module: str, name: str):
        if module == "numpy" and name in ("ndarray", "dtype"):
            return super().find_class(module, name)
        if module == "_codecs" and name == "encode":
            return super().find_class(module, name)
        head, _, tail = module.rpartition(".")
        if head in ("numpy.core", "numpy._core") and (tail, name) in _NUMPY_GLOBALS:
            try:  # numpy >= 2 moved numpy.core to numpy._core (the old path warns)
                return super().find_class(f"numpy._core.{tail}", name)
            except (ImportError, AttributeError):
                return super().find_class(f"numpy.core.{tail}", name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a data file")


def load_pickle(path: Path) -> dict:
    """Load one CIFAR python-version pickle (Python 2 pickles: latin1) with str keys."""
    with _reading("cifar100", path), open(path, "rb") as fh:
        obj = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"cifar100: {path}: expected a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_split(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(images N x 32 x 32 x 3, fine labels, coarse labels or None when the file has none)."""
    d = load_pickle(path)
    try:
        data, labels = d["data"], d["fine_labels"]
    except KeyError as e:
        raise ValueError(f"cifar100: {path} has no {e.args[0]!r} entry (is it CIFAR-100?)") from None
    with _reading("cifar100", path, " (images of 3 x 32 x 32 bytes)"):
        images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    coarse = d.get("coarse_labels")
    for key, values in (("fine_labels", labels), ("coarse_labels", coarse)):
        if values is not None and len(values) != len(images):
            raise ValueError(f"cifar100: {path}: {len(values)} {key} for {len(images)} images")
    return (np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64),
            None if coarse is None else np.asarray(coarse, dtype=np.int64))


def superclass_map(fine: np.ndarray, coarse: np.ndarray, num_classes: int,
                   source: Path) -> np.ndarray:
    """fine class -> its superclass, read off the per-image label pairs; an error when a class
    has images in two superclasses or none."""
    out = np.full(num_classes, -1, dtype=np.int64)
    for c in range(num_classes):
        sup = np.unique(coarse[fine == c])
        if len(sup) != 1:
            raise ValueError(f"cifar100: {source}: class {c} has coarse labels {sup.tolist()} "
                             "(expected exactly one superclass per class)")
        out[c] = sup[0]
    return out


@register_dataset("cifar100")
def cifar100(root: Path, *, seed: int = 0, val_fraction: float, **options) -> DataBundle:
    base = _require(Path(root) / "cifar100" / "cifar-100-python", "cifar100", "dir")
    meta = load_pickle(_require(base / "meta", "cifar100"))
    names = lambda key: [n.decode() if isinstance(n, bytes) else str(n)  # noqa: E731
                         for n in meta.get(key, [])]
    class_names = names("fine_label_names")
    if not class_names:
        raise ValueError(f"cifar100: {base / 'meta'}: no 'fine_label_names' entry (is it CIFAR-100?)")
    tr_x, tr_y, tr_c = _cifar_split(_require(base / "train", "cifar100"))
    te_x, te_y, _ = _cifar_split(_require(base / "test", "cifar100"))
    _check_labels("cifar100", tr_y, len(class_names), base / "train")
    _check_labels("cifar100", te_y, len(class_names), base / "test")
    supers = None if tr_c is None else superclass_map(tr_y, tr_c, len(class_names), base / "train")
    return _bundle("cifar100", lambda tf: ArrayImages(tr_x, tr_y, tf), tr_y,
                   lambda tf: ArrayImages(te_x, te_y, tf), te_y, class_names, 32, supers,
                   names("coarse_label_names"), seed=seed, val_fraction=val_fraction, **options)


# --- Stanford Cars -----------------------------------------------------------------------------

def _cars_annotations(mat: Path, images: Path) -> tuple[list[str], np.ndarray]:
    """(paths, 0-based labels), read as torchvision's StanfordCars does."""
    import scipy.io as sio

    with _reading("stanford_cars", mat):
        annos = np.atleast_1d(sio.loadmat(mat, squeeze_me=True)["annotations"])
        paths = [str(images / str(a["fname"])) for a in annos]
        labels = np.asarray([int(a["class"]) - 1 for a in annos], dtype=np.int64)
    return paths, labels


@register_dataset("stanford_cars")
def stanford_cars(root: Path, *, seed: int = 0, val_fraction: float,
                  **options) -> DataBundle:
    import scipy.io as sio

    base = _require(Path(root) / "stanford_cars", "stanford_cars", "dir")
    meta = _require(base / "devkit" / "cars_meta.mat", "stanford_cars")
    tr_mat = _require(base / "devkit" / "cars_train_annos.mat", "stanford_cars")
    te_mat = _require(base / "cars_test_annos_withlabels.mat", "stanford_cars")
    tr_dir = _require(base / "cars_train", "stanford_cars", "dir")
    te_dir = _require(base / "cars_test", "stanford_cars", "dir")
    with _reading("stanford_cars", meta):
        class_names = [str(n) for n in
                       np.atleast_1d(sio.loadmat(meta, squeeze_me=True)["class_names"]).tolist()]
    tr_paths, tr_y = _cars_annotations(tr_mat, tr_dir)
    te_paths, te_y = _cars_annotations(te_mat, te_dir)
    _check_labels("stanford_cars", tr_y, len(class_names), tr_mat)
    _check_labels("stanford_cars", te_y, len(class_names), te_mat)
    for p in (tr_paths[:1] + te_paths[:1]):  # cheap check that the images are where expected
        _require(Path(p), "stanford_cars")
    return _bundle("stanford_cars", lambda tf: FileImages(tr_paths, tr_y, tf), tr_y,
                   lambda tf: FileImages(te_paths, te_y, tf), te_y, class_names,
                   seed=seed, val_fraction=val_fraction, **options)


# --- CUB-200-2011 ------------------------------------------------------------------------------

def _id_table(path: Path) -> dict[int, str]:
    """``"<id> <value>"`` lines -> {id: value}."""
    table = {}
    with _reading("cub200", path):
        lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        key, _, value = line.strip().partition(" ")
        if not line.strip():
            continue
        if not value or not key.isdigit():
            raise ValueError(f"cub200: {path}:{n}: expected '<id> <value>', got {line!r}")
        table[int(key)] = value.strip()
    return table


@register_dataset("cub200")
def cub200(root: Path, *, seed: int = 0, val_fraction: float, **options) -> DataBundle:
    base = _require(Path(root) / "cub200" / "CUB_200_2011", "cub200", "dir")
    images_dir = _require(base / "images", "cub200", "dir")
    files = _id_table(_require(base / "images.txt", "cub200"))
    labels = _id_table(_require(base / "image_class_labels.txt", "cub200"))
    split = _id_table(_require(base / "train_test_split.txt", "cub200"))
    classes = _id_table(_require(base / "classes.txt", "cub200"))
    class_ids = sorted(classes)
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise ValueError(f"cub200: class ids in {base / 'classes.txt'} are not 1..{len(class_ids)}")
    # "001.Black_footed_Albatross" -> "Black_footed_Albatross"
    class_names = [classes[c].partition(".")[2] or classes[c] for c in class_ids]
    missing = sorted(set(files) - set(labels) | set(files) - set(split))
    if missing:
        raise ValueError(f"cub200: image ids {missing[:5]} lack a label or a split entry")
    parts: dict[str, tuple[list[str], list[int]]] = {"1": ([], []), "0": ([], [])}
    for image_id in sorted(files):
        flag = split[image_id]
        if flag not in parts:
            raise ValueError(f"cub200: {base / 'train_test_split.txt'}: id {image_id} has "
                             f"is_training_image={flag!r} (expected 0 or 1)")
        parts[flag][0].append(str(images_dir / files[image_id]))
        with _reading("cub200", base / "image_class_labels.txt", f" (label of image {image_id})"):
            parts[flag][1].append(int(labels[image_id]) - 1)
    (tr_paths, tr_y), (te_paths, te_y) = parts["1"], parts["0"]
    tr_y, te_y = np.asarray(tr_y, dtype=np.int64), np.asarray(te_y, dtype=np.int64)
    _check_labels("cub200", tr_y, len(class_names), base / "image_class_labels.txt")
    _check_labels("cub200", te_y, len(class_names), base / "image_class_labels.txt")
    for p in (tr_paths[:1] + te_paths[:1]):
        _require(Path(p), "cub200")
    return _bundle("cub200", lambda tf: FileImages(tr_paths, tr_y, tf), tr_y,
                   lambda tf: FileImages(te_paths, te_y, tf), te_y, class_names,
                   seed=seed, val_fraction=val_fraction, **options)
