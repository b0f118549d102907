"""Images in: a study's data from any source (`dataset`: MNIST, a Keras-layout `.npz`, an image
folder), MNIST itself, folders of one subfolder per class, and the preprocessing that turns a
user's photo or scan into a 28x28 MNIST-like digit or letter (or resizes other pictures)."""

from tuning.images.dataset import DataSource, Images, load_images, resolve_source
from tuning.images.folder import ImageFolder, load_image_folder, parse_classes
from tuning.images.mnist import LabeledImages, file_sha256, load_mnist, stratified_subset
from tuning.images.preprocess import prepare_image, read_image, resize_image

__all__ = [
    "DataSource",
    "ImageFolder",
    "Images",
    "LabeledImages",
    "file_sha256",
    "load_image_folder",
    "load_images",
    "load_mnist",
    "parse_classes",
    "prepare_image",
    "read_image",
    "resize_image",
    "resolve_source",
    "stratified_subset",
]
