"""The real-data loaders on tiny fixtures written in each data set's exact on-disk format."""

from __future__ import annotations

import os
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image

from dilt.data import dataset_names, load_dataset
from dilt.data.imagefolders import FileImages, load_pickle

SIZE = 32
RNG = np.random.default_rng(0)


def _image(path: Path, w: int = 40, h: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg")
                              else None)


def _paths(ds) -> list[str]:
    """File paths behind a Subset of FileImages."""
    return [str(ds.dataset.paths[i]) for i in ds.indices]


def _check_bundle(b, *, num_classes: int, train_labels: list[int], test_labels: list[int],
                  val_fraction: float):
    assert b.num_classes == num_classes
    assert len(b.class_names) == num_classes
    assert b.input_shape == (3, SIZE, SIZE)
    # train and val are disjoint views over the official training set and together cover it
    tr, va = set(b.train.indices), set(b.val.indices)
    assert not tr & va
    assert tr | va == set(range(len(train_labels)))
    assert len(b.train.dataset) == len(b.val.dataset) == len(train_labels)
    # labels follow the indices; class counts of train+val equal the official counts
    assert list(b.train_targets) == [train_labels[i] for i in b.train.indices]
    assert list(b.val_targets) == [train_labels[i] for i in b.val.indices]
    assert Counter(b.train_targets) + Counter(b.val_targets) == Counter(train_labels)
    # stratified: every class keeps round(fraction * count) images in val
    for c, n in Counter(train_labels).items():
        assert int((b.val_targets == c).sum()) == int(round(val_fraction * n))
    assert list(b.test_targets) == list(test_labels)
    # items: (normalised float tensor, int label) at the requested size
    for split in ("train", "val", "test"):
        ds, targets = b.split(split)
        x, y = ds[0]
        assert isinstance(x, torch.Tensor) and x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
        assert isinstance(y, int) and y == targets[0]
    # the validation part is not augmented: the eval transform is deterministic
    assert b.val.dataset is not b.train.dataset
    x1, _ = b.val[0]
    x2, _ = b.val[0]
    assert torch.equal(x1, x2)
    t1, _ = b.test[0]
    assert torch.equal(t1, b.test[0][0])


# --- ImageNet ----------------------------------------------------------------------------------

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _imagenet(root: Path, n_train=(5, 5, 5), n_val=2) -> tuple[list[int], list[int]]:
    base = root / "imagenet"
    train, test = [], []
    for c, (wnid, n) in enumerate(zip(WNIDS, n_train)):
        for i in range(n):
            _image(base / "train" / wnid / f"{wnid}_{i}.JPEG", 40 + i, 30)
            train.append(c)
        for i in range(n_val):
            _image(base / "val" / wnid / f"ILSVRC2012_val_{c * 10 + i:08d}.JPEG")
            test.append(c)
    (base / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
        "n01484850 great white shark, white shark\n")
    return train, test


def test_imagenet(tmp_path):
    train, test = _imagenet(tmp_path, n_train=(5, 4, 6))
    b = load_dataset("imagenet", root=tmp_path, seed=0, val_fraction=0.4, image_size=SIZE)
    _check_bundle(b, num_classes=3, train_labels=train, test_labels=test, val_fraction=0.4)
    assert b.class_names == ["tench", "goldfish", "great white shark"]
    paths = _paths(b.train) + _paths(b.val)
    assert sorted(paths) == sorted(str(p) for p in (tmp_path / "imagenet/train").rglob("*.JPEG"))
    assert all(Path(p).parent.name == WNIDS[y] for p, y in
               zip(_paths(b.val), b.val_targets))
    # the split is deterministic per seed and changes with it
    again = load_dataset("imagenet", root=tmp_path, seed=0, val_fraction=0.4, image_size=SIZE)
    other = load_dataset("imagenet", root=tmp_path, seed=1, val_fraction=0.4, image_size=SIZE)
    assert list(again.val.indices) == list(b.val.indices)
    assert list(other.val.indices) != list(b.val.indices)


def test_imagenet_without_mapping_and_no_augment(tmp_path):
    train, test = _imagenet(tmp_path)
    (tmp_path / "imagenet" / "LOC_synset_mapping.txt").unlink()
    b = load_dataset("imagenet", root=tmp_path, seed=0, val_fraction=0.2, image_size=SIZE,
                     augment=False)
    assert b.class_names == WNIDS
    assert torch.equal(b.train[0][0], b.train[0][0])  # eval transform on train too


def test_imagenet_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"imagenet.*not found.*imagenet/\{train,val\}"):
        load_dataset("imagenet", root=tmp_path, image_size=SIZE)
    _imagenet(tmp_path)
    for p in (tmp_path / "imagenet" / "val").rglob("*.JPEG"):
        p.unlink()
    for d in (tmp_path / "imagenet" / "val").iterdir():
        d.rmdir()
    with pytest.raises(FileNotFoundError, match="no class folders"):
        load_dataset("imagenet", root=tmp_path, image_size=SIZE)


# --- CIFAR-100 ---------------------------------------------------------------------------------

CIFAR_NAMES = ["apple", "aquarium_fish", "baby", "bear"]
CIFAR_COARSE = [4, 1, 14, 8]   # the official superclasses of these four classes
COARSE_NAMES = [f"super{i}" for i in range(20)]


class _Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle did: str and bytes as py2 byte strings, numpy as numpy.core."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = pickle.whichmodule(obj, name).replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str
    dispatch[type] = save_global


def _dump_py2(obj, path):
    with open(path, "wb") as fh:
        _Py2Pickler(fh, protocol=2).dump(obj)
    assert b"_codecs" not in Path(path).read_bytes()  # no Python 3 bytes objects in the file


def _cifar(root: Path, per_class=5, per_class_test=2, coarse=CIFAR_COARSE) -> tuple[list[int], list[int]]:
    base = root / "cifar100" / "cifar-100-python"
    base.mkdir(parents=True)

    def split(n):
        labels = [c for c in range(len(CIFAR_NAMES)) for _ in range(n)]
        RNG.shuffle(labels)
        data = RNG.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        return [int(v) for v in labels], data

    train_y, train_x = split(per_class)
    test_y, test_x = split(per_class_test)
    # the official files are Python 2 cPickles (protocol 2): their str objects are byte strings
    # (SHORT_BINSTRING/BINSTRING opcodes, read back as str under encoding="latin1") and numpy is
    # named numpy.core. The train file is written that way; the test file with Python 3 str keys
    # and the meta file with Python 3 bytes keys: all three must load
    _dump_py2({"filenames": [f"f{i}.png" for i in range(len(train_y))],
               "batch_label": "training batch 1 of 1", "fine_labels": train_y,
               "coarse_labels": [coarse[y] for y in train_y], "data": train_x}, base / "train")
    with open(base / "test", "wb") as fh:
        pickle.dump({"filenames": [f"t{i}.png" for i in range(len(test_y))],
                     "batch_label": "testing batch 1 of 1", "fine_labels": test_y,
                     "coarse_labels": [coarse[y] for y in test_y], "data": test_x}, fh)
    with open(base / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [n.encode() for n in CIFAR_NAMES],
                     b"coarse_label_names": [n.encode() for n in COARSE_NAMES]}, fh, protocol=2)
    return train_y, test_y, train_x


def test_cifar100(tmp_path):
    train, test, train_x = _cifar(tmp_path)
    b = load_dataset("cifar100", root=tmp_path, seed=0, val_fraction=0.4, image_size=SIZE)
    _check_bundle(b, num_classes=4, train_labels=train, test_labels=test, val_fraction=0.4)
    assert b.class_names == CIFAR_NAMES
    # pixels: row-major CHW rows -> HWC images, unchanged
    images = b.train.dataset.images
    assert images.shape == (len(train), 32, 32, 3)
    assert np.array_equal(images[3], train_x[3].reshape(3, 32, 32).transpose(1, 2, 0))
    # superclasses: read off the per-image coarse labels
    assert b.superclasses.tolist() == CIFAR_COARSE
    assert b.superclass_names == COARSE_NAMES
    assert b.coarse_targets("val").tolist() == [CIFAR_COARSE[y] for y in b.val_targets]
    # the semantic scheme on what the loader gives: superclasses {1, 4} vs {8, 14}
    from dilt.data.partition import make_partitions

    parts = make_partitions(b.train_targets, b.val_targets, 4, 2, "semantic", seed=0,
                            superclasses=b.superclasses)
    assert [p.classes for p in parts] == [(0, 1), (2, 3)]
    assert set(b.coarse_targets("train")[parts[0].train_idx]) == {1, 4}


def test_cifar100_inconsistent_superclasses(tmp_path):
    base = tmp_path / "cifar100" / "cifar-100-python"
    _cifar(tmp_path)
    d = pickle.loads((base / "train").read_bytes(), encoding="latin1")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    first = d["fine_labels"].index(0)
    d["coarse_labels"][first] = 7          # one apple filed under another superclass
    (base / "train").write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(ValueError, match=r"class 0 has coarse labels \[4, 7\]"):
        load_dataset("cifar100", root=tmp_path, image_size=SIZE)


def test_cifar100_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load global (posix|os|nt).getcwd"):
        load_pickle(path)


def test_cifar100_missing(tmp_path):
    _cifar(tmp_path)
    (tmp_path / "cifar100" / "cifar-100-python" / "meta").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python/meta not found"):
        load_dataset("cifar100", root=tmp_path, image_size=SIZE)


# --- Stanford Cars -----------------------------------------------------------------------------

CAR_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]


def _annotations(fnames: list[str], labels: list[int]) -> np.ndarray:
    dt = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
          ("class", "O"), ("fname", "O")]
    rec = np.zeros((1, len(fnames)), dtype=dt)
    for i, (f, y) in enumerate(zip(fnames, labels)):
        rec[0, i] = (np.uint8(1), np.uint8(1), np.uint8(30), np.uint8(20), np.uint8(y + 1), f)
    return rec


def _cars(root: Path, per_class=4, per_class_test=2) -> tuple[list[int], list[int]]:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    train = [c for c in range(3) for _ in range(per_class)]
    test = [c for c in range(3) for _ in range(per_class_test)]
    RNG.shuffle(train)
    RNG.shuffle(test)
    tr_names = [f"{i + 1:05d}.jpg" for i in range(len(train))]
    te_names = [f"{i + 1:05d}.jpg" for i in range(len(test))]
    for i, f in enumerate(tr_names):
        _image(base / "cars_train" / f, 50 + i, 35)
    for f in te_names:
        _image(base / "cars_test" / f, 45, 40)
    sio.savemat(base / "devkit" / "cars_meta.mat",
                {"class_names": np.array(CAR_NAMES, dtype=object).reshape(1, -1)})
    sio.savemat(base / "devkit" / "cars_train_annos.mat",
                {"annotations": _annotations(tr_names, train)})
    sio.savemat(base / "cars_test_annos_withlabels.mat",
                {"annotations": _annotations(te_names, test)})
    return train, test


def test_stanford_cars(tmp_path):
    from torchvision.datasets import StanfordCars

    train, test = _cars(tmp_path)
    b = load_dataset("stanford_cars", root=tmp_path, seed=3, val_fraction=0.25, image_size=SIZE)
    _check_bundle(b, num_classes=3, train_labels=train, test_labels=test, val_fraction=0.25)
    assert b.class_names == CAR_NAMES
    # the fixture is in torchvision's layout, and both read the same samples
    for split, ds in (("train", b.train.dataset), ("test", b.test)):
        tv = StanfordCars(tmp_path, split=split, download=False)
        assert [(str(p), y) for p, y in tv._samples] == \
            [(str(p), int(y)) for p, y in zip(ds.paths, ds.targets)]
        assert tv.classes == CAR_NAMES


def test_stanford_cars_missing(tmp_path):
    _cars(tmp_path)
    (tmp_path / "stanford_cars" / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"cars_test_annos_withlabels\.mat not found"):
        load_dataset("stanford_cars", root=tmp_path, image_size=SIZE)


# --- CUB-200-2011 ------------------------------------------------------------------------------

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
               "004.Groove_billed_Ani"]


def _cub(root: Path, per_class=5) -> tuple[list[int], list[int]]:
    base = root / "cub200" / "CUB_200_2011"
    images, labels, split = [], [], []
    train, test = [], []
    image_id = 0
    for c, cls in enumerate(CUB_CLASSES):
        for i in range(per_class):
            image_id += 1
            rel = f"{cls}/{cls.split('.')[1]}_{i:04d}_{image_id}.jpg"
            _image(base / "images" / rel, 30 + i, 40)
            is_train = int(i % 2 == 0 or i == 1)  # 4 train, 1 test per class
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {is_train}")
            (train if is_train else test).append(c)
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text(
        "\n".join(f"{i + 1} {c}" for i, c in enumerate(CUB_CLASSES)) + "\n")
    return train, test


def test_cub200(tmp_path):
    train, test = _cub(tmp_path)
    b = load_dataset("cub200", root=tmp_path, seed=0, val_fraction=0.25, image_size=SIZE)
    _check_bundle(b, num_classes=4, train_labels=train, test_labels=test, val_fraction=0.25)
    assert b.class_names == [c.split(".", 1)[1] for c in CUB_CLASSES]
    # every image's folder is its class
    for ds, targets in ((b.train.dataset, b.train.dataset.targets), (b.test, b.test_targets)):
        assert isinstance(ds, FileImages)
        assert [Path(p).parent.name for p in ds.paths] == [CUB_CLASSES[y] for y in targets]
    assert len(b.test) == 4 and Counter(b.test_targets) == Counter(range(4))


def test_cub200_missing(tmp_path):
    _cub(tmp_path)
    (tmp_path / "cub200" / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"train_test_split\.txt not found"):
        load_dataset("cub200", root=tmp_path, image_size=SIZE)


def test_registered():
    assert {"imagenet", "cifar100", "stanford_cars", "cub200"} <= set(dataset_names())


def test_errors_are_one_line(tmp_path):
    for name in ("imagenet", "cifar100", "stanford_cars", "cub200"):
        with pytest.raises(FileNotFoundError) as info:
            load_dataset(name, root=tmp_path / "nowhere", image_size=SIZE)
        msg = str(info.value)
        assert "\n" not in msg and str(tmp_path / "nowhere" / name) in msg


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


DAMAGES = {
    "cifar100 train truncated": ("cifar100", _cifar, lambda b: _truncate(b / "cifar100/cifar-100-python/train"),
                                 "cifar-100-python/train"),
    "cifar100 meta empty": ("cifar100", _cifar, lambda b: (b / "cifar100/cifar-100-python/meta").write_bytes(b""),
                            "cifar-100-python/meta"),
    "cifar100 test an HTML page": ("cifar100", _cifar, lambda b: (b / "cifar100/cifar-100-python/test").write_text(
        "<html>404</html>"), "cifar-100-python/test"),
    "cars annotations truncated": ("stanford_cars", _cars, lambda b: _truncate(
        b / "stanford_cars/devkit/cars_train_annos.mat"), "cars_train_annos.mat"),
    "cars test annotations lack the field": ("stanford_cars", _cars, lambda b: sio.savemat(
        b / "stanford_cars/cars_test_annos_withlabels.mat", {"other": np.zeros(2)}), "cars_test_annos_withlabels.mat"),
    "cars meta lacks class_names": ("stanford_cars", _cars, lambda b: sio.savemat(
        b / "stanford_cars/devkit/cars_meta.mat", {"names": np.zeros(2)}), "cars_meta.mat"),
    "cub images.txt with a header": ("cub200", _cub, lambda b: (b / "cub200/CUB_200_2011/images.txt").write_text(
        "id path\n" + (b / "cub200/CUB_200_2011/images.txt").read_text()), "images.txt:1"),
    "cub labels not UTF-8": ("cub200", _cub, lambda b: (b / "cub200/CUB_200_2011/image_class_labels.txt").write_bytes(
        b"\xff\xfe1 1\n"), "image_class_labels.txt"),
    "imagenet mapping not UTF-8": ("imagenet", _imagenet, lambda b: (b / "imagenet/LOC_synset_mapping.txt").write_bytes(
        b"\xff\xfe"), "LOC_synset_mapping.txt"),
    "imagenet class folder empty": ("imagenet", _imagenet, lambda b: [
        f.unlink() for f in (b / "imagenet/train" / WNIDS[1]).iterdir()], WNIDS[1]),
    "imagenet val class folder empty": ("imagenet", _imagenet, lambda b: [
        f.unlink() for f in (b / "imagenet/val" / WNIDS[2]).iterdir()], f"val/{WNIDS[2]}"),
    "imagenet val images not sorted into folders": ("imagenet", _imagenet, lambda b: _image(
        b / "imagenet/val/ILSVRC2012_val_00000001.JPEG"), "imagenet/val"),
    "cifar100 meta of CIFAR-10": ("cifar100", _cifar, lambda b: _dump_py2(
        {"label_names": ["airplane"]}, b / "cifar100/cifar-100-python/meta"), "cifar-100-python/meta"),
    "cifar100 meta not a dict": ("cifar100", _cifar, lambda b: _dump_py2(
        ["apple"], b / "cifar100/cifar-100-python/meta"), "cifar-100-python/meta"),
    "cifar100 train labels fewer than images": ("cifar100", _cifar, lambda b: _drop_label(
        b / "cifar100/cifar-100-python/train"), "cifar-100-python/train"),
}


def _drop_label(path):
    d = load_pickle(path)
    _dump_py2({**d, "fine_labels": d["fine_labels"][:-1]}, path)


@pytest.mark.parametrize("case", DAMAGES)
def test_a_damaged_file_is_one_line_naming_it(tmp_path, case):
    """A truncated, foreign or partial data file is refused in one line naming the file, never
    a traceback from the parser or an error naming nothing."""
    name, write, damage, where = DAMAGES[case]
    write(tmp_path)
    damage(tmp_path)
    with pytest.raises(ValueError) as info:
        load_dataset(name, root=tmp_path, image_size=SIZE)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{name}: ") and where in msg, msg


# --- training transforms -----------------------------------------------------------------------

def _ops(transform) -> list:
    return list(transform.transforms)


def _random_free(transform) -> bool:
    """Only resizing, cropping at the centre, tensor conversion and normalisation."""
    from timm.data.transforms import MaybeToTensor
    from torchvision import transforms as T

    return all(isinstance(t, (T.Resize, T.CenterCrop, T.ToTensor, T.Normalize, MaybeToTensor))
               for t in _ops(transform))


def test_deit_transforms_are_timms(tmp_path):
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision import transforms as T

    _imagenet(tmp_path)
    b = load_dataset("imagenet", root=tmp_path, val_fraction=0.2, image_size=SIZE, augment="deit")
    ops = _ops(b.train.dataset.transform)
    crop, flip, ra, erase = ops[0], ops[1], ops[2], ops[-1]
    assert isinstance(crop, RandomResizedCropAndInterpolation) and crop.scale == (0.08, 1.0)
    assert crop.interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(flip, T.RandomHorizontalFlip) and flip.p == 0.5
    # rand-m9-mstd0.5-inc1: two ops a step, magnitude 9, std 0.5, the 'increasing' op set
    assert isinstance(ra, RandAugment) and ra.num_layers == 2
    assert {op.magnitude for op in ra.ops} == {9} and {op.magnitude_std for op in ra.ops} == {0.5}
    assert {"PosterizeIncreasing", "SolarizeIncreasing", "ShearX"} <= {op.name for op in ra.ops}
    assert isinstance(erase, RandomErasing) and erase.probability == 0.25
    assert erase.mode == "pixel" and (erase.min_count, erase.max_count) == (1, 1)
    assert not any(isinstance(t, T.ColorJitter) for t in ops)   # timm drops jitter under RandAugment
    # validation and test: resize to size / 0.875 (bicubic) and centre-crop, nothing random
    for ds in (b.val.dataset, b.test):
        assert _random_free(ds.transform)
        resize = next(t for t in _ops(ds.transform) if isinstance(t, T.Resize))
        assert resize.size == int(SIZE / 0.875) and resize.interpolation == T.InterpolationMode.BICUBIC
    assert b.val[0][0].shape == b.train[0][0].shape == (3, SIZE, SIZE)


@pytest.mark.parametrize("augment", ["basic", "none", True, False])
def test_basic_and_no_augmentation(tmp_path, augment):
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision import transforms as T

    _cub(tmp_path)
    b = load_dataset("cub200", root=tmp_path, val_fraction=0.25, image_size=SIZE, augment=augment,
                     min_scale=0.3)
    ops = _ops(b.train.dataset.transform)
    if augment in ("none", False):
        assert _random_free(b.train.dataset.transform)
    else:   # RandomResizedCrop (bilinear) + flip, then to tensor and normalise: nothing else
        assert isinstance(ops[0], RandomResizedCropAndInterpolation) and ops[0].scale == (0.3, 1.0)
        assert ops[0].interpolation == T.InterpolationMode.BILINEAR
        assert isinstance(ops[1], T.RandomHorizontalFlip)
        assert not any(isinstance(t, (RandAugment, RandomErasing, T.ColorJitter)) for t in ops)
    assert _random_free(b.val.dataset.transform) and _random_free(b.test.transform)


@pytest.mark.parametrize("augment", ["basic", "deit"])
def test_cifar_at_native_size_pads_and_crops(tmp_path, augment):
    from torchvision import transforms as T

    _, _, train_x = _cifar(tmp_path)
    b = load_dataset("cifar100", root=tmp_path, val_fraction=0.4, image_size=32, augment=augment)
    first = _ops(b.train.dataset.transform)[0]
    assert isinstance(first, T.RandomCrop) and first.padding == 4 and first.size == (32, 32)
    # evaluation: the image itself, normalised (no resize, no crop)
    i = b.val.indices[0]
    img = torch.as_tensor(b.val.dataset.images[i]).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(b.val[0][0], (img - mean[:, None, None]) / std[:, None, None], atol=1e-6)
    # upsampled (224-style): resized crop and resize + centre crop again
    up = load_dataset("cifar100", root=tmp_path, val_fraction=0.4, image_size=48, augment=augment)
    assert not isinstance(_ops(up.train.dataset.transform)[0], T.RandomCrop)
    assert any(isinstance(t, T.Resize) for t in _ops(up.val.dataset.transform))


def test_augment_option_is_validated(tmp_path):
    from dilt.config import _loader_options

    _imagenet(tmp_path)
    with pytest.raises(ValueError, match=r"augment: 'randaug' is not one of none, basic, deit") as e:
        load_dataset("imagenet", root=tmp_path, image_size=SIZE, augment="randaug")
    assert "\n" not in str(e.value)
    # the config helper reads the loaders' signatures: augment is an option of every image loader
    for name in ("imagenet", "cifar100", "stanford_cars", "cub200"):
        assert _loader_options(name)["augment"] == "basic"


def _seed_all(s: int) -> None:
    import random

    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def test_augmentation_replays_from_the_seeds(tmp_path):
    """Seeding torch, random and numpy fixes every augmented tensor, in this process and in
    DataLoader workers seeded from the loader's generator; other seeds give other tensors."""
    from torch.utils.data import DataLoader

    _imagenet(tmp_path)
    b = load_dataset("imagenet", root=tmp_path, val_fraction=0.2, image_size=SIZE, augment="deit")

    def draw(s):
        _seed_all(s)
        return torch.stack([b.train[i][0] for i in range(len(b.train))])

    a = draw(11)
    _seed_all(99)   # unrelated draws in between change nothing once reseeded
    torch.rand(5), np.random.rand(3)
    assert torch.equal(a, draw(11))
    assert not torch.equal(a, draw(12))

    def epoch(s):
        g = torch.Generator().manual_seed(s)
        loader = DataLoader(b.train, batch_size=4, shuffle=False, num_workers=2, generator=g)
        return torch.cat([x for x, _ in loader])

    e1 = epoch(5)
    assert torch.equal(e1, epoch(5))
    assert not torch.equal(e1, epoch(6))


def test_posterize_keeps_zero_bits_as_deit_did(tmp_path):
    """At magnitude 10 the 'increasing' posterize asks for 0 bits, which Pillow now refuses;
    every posterize op of the DeiT transform gives a black image there instead of an error."""
    from PIL import Image as PILImage
    from timm.data.auto_augment import RandAugment

    _imagenet(tmp_path)
    b = load_dataset("imagenet", root=tmp_path, val_fraction=0.2, image_size=SIZE, augment="deit")
    ra = next(t for t in _ops(b.train.dataset.transform) if isinstance(t, RandAugment))
    post = [op for op in ra.ops if op.name.startswith("Posterize")]
    assert post and all(op.level_fn(10, op.hparams) == (0,) for op in post)
    img = PILImage.fromarray(RNG.integers(1, 256, size=(8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError):  # what timm's own op does with this Pillow
        from timm.data.auto_augment import posterize
        posterize(img, 0)
    for op in post:
        assert not np.asarray(op.aug_fn(img, 0)).any()
        assert np.array_equal(np.asarray(op.aug_fn(img, 3)), np.asarray(img) & 0b11100000)
        assert op.aug_fn(img, 8) is img


def test_scoring_batches_are_augmented_from_their_seed(tmp_path):
    """A one-off pass (SNIP's and GraSP's batch, CAP's gradients) replays the same augmented
    tensors whatever the global random state; its seed changes them."""
    from dilt.data.loader import batches

    _imagenet(tmp_path)
    b = load_dataset("imagenet", root=tmp_path, val_fraction=0.2, image_size=SIZE, augment="deit")
    idx = np.arange(len(b.train))

    def draw(state, **kw):
        _seed_all(state)
        return torch.cat([x for x, _ in batches(b.train, idx, 4, **kw)])

    a = draw(1)
    assert torch.equal(a, draw(2)) and torch.equal(draw(3, augment_seed=7), draw(4, augment_seed=7))
    assert not torch.equal(a, draw(1, augment_seed=7))
