"""Datasets of the benchmark: CIFAR-100, its generated stand-in, the offline digits, ImageNet and the
transfer sets (Tiny-ImageNet, STL-10)."""

from distillbench.data.cifar100 import CIFAR100_MD5, build_cifar100
from distillbench.data.digits import build_digits, digits_mean_std
from distillbench.data.errors import DatasetCorruptError, DatasetNotFoundError
from distillbench.data.fake import write_fake_cifar100
from distillbench.data.imagenet import build_imagenet
from distillbench.data.instance import InstanceDataset
from distillbench.data.transfer import build_stl10, build_tiny_imagenet
from distillbench.data.transforms import CIFAR100_MEAN, CIFAR100_STD, test_transform, train_transform

__all__ = [
    "CIFAR100_MD5",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "InstanceDataset",
    "build_cifar100",
    "build_digits",
    "build_imagenet",
    "build_stl10",
    "build_tiny_imagenet",
    "digits_mean_std",
    "test_transform",
    "train_transform",
    "write_fake_cifar100",
]
