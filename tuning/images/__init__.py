"""Images in: MNIST from a Keras `.npz`, folders of one subfolder per class, and the preprocessing
that turns a user's photo or scan into a 28x28 MNIST-like digit or letter."""

from tuning.images.folder import ImageFolder, load_image_folder, parse_classes
from tuning.images.mnist import LabeledImages, file_sha256, load_mnist, stratified_subset
from tuning.images.preprocess import prepare_image, read_image

__all__ = [
    "ImageFolder",
    "LabeledImages",
    "file_sha256",
    "load_image_folder",
    "load_mnist",
    "parse_classes",
    "prepare_image",
    "read_image",
    "stratified_subset",
]
