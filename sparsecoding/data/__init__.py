"""Data: bundled small real data, loaders for standard files, preprocessing, synthetic bars.

Nothing is downloaded: bundled data comes from files shipped inside
scikit-learn (handwritten digits) and scikit-image (photographs); CIFAR-10 and
MNIST (and STL-10) are read from the standard files in a folder the user already
has; a corrupt file raises DataFileError naming it.
"""
from .bars import bars
from .bundled import digits_split, load_digits, natural_images
from .files import DataFileError, UnsafePickleError, load_cifar10, load_mnist, load_stl10
from .synthetic import sparse_conv_data
from .preprocessing import extract_patches, natural_patches, random_crops, standardize, whiten, whiten_images, zca_whitening_matrix

__all__ = ["bars", "digits_split", "load_digits", "natural_images", "load_cifar10", "load_mnist", "load_stl10", "DataFileError",
           "UnsafePickleError", "extract_patches",
           "random_crops", "standardize", "whiten", "zca_whitening_matrix", "natural_patches", "whiten_images",
           "sparse_conv_data"]
