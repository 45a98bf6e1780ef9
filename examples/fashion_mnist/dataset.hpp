// Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 60000 training and 10000 test images of 28x28
// grey pixels in 10 classes of clothing, in the MNIST file format (IDX).
#pragma once

#include <Eigen/Core>

#include <cstddef>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "idx.hpp"

namespace fmnist {

inline constexpr int kPixels = 28 * 28;
inline constexpr int kClasses = 10;
inline constexpr const char* kClassNames[kClasses] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

/// Row-major: one image (or one hidden layer, one row of logits) per row, as the batches need.
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Images (N x 784, pixels scaled to [0, 1]) and their labels (N, in [0, 10)).
struct Split {
  Matrix images;
  Eigen::VectorXi labels;
  Eigen::Index size() const { return labels.size(); }
};

struct Dataset {
  Split train, test;
};

/// The files' names in the original distribution, which Debian's dataset-fashion-mnist keeps.
inline constexpr const char* kFiles[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

/// `<folder>/<name>.gz`, else `<folder>/<name>`, else "".
inline std::string find_file(const std::string& folder, const std::string& name) {
  for (const std::string& candidate : {name + ".gz", name}) {
    const std::filesystem::path p = std::filesystem::path(folder) / candidate;
    if (std::filesystem::is_regular_file(p)) return p.string();
  }
  return "";
}

/// Whether all four files are in the folder.
inline bool available(const std::string& folder) {
  for (const char* name : kFiles)
    if (find_file(folder, name).empty()) return false;
  return true;
}

/// Reads an images file (N x 28 x 28) and its labels file (N, each in [0, 10)).
/// Throws std::runtime_error, naming the file, on any mismatch.
inline Split load_split(const std::string& images_path, const std::string& labels_path) {
  const idx::Array images = idx::read(images_path);
  if (images.dims.size() != 3 || images.dims[1] != 28 || images.dims[2] != 28)
    throw std::runtime_error(images_path + ": expected images of N x 28 x 28 pixels, found " +
                             idx::detail::dims_text(images.dims));
  const idx::Array labels = idx::read(labels_path);
  if (labels.dims.size() != 1)
    throw std::runtime_error(labels_path + ": expected a vector of labels, found " +
                             idx::detail::dims_text(labels.dims));
  if (labels.dims[0] != images.dims[0])
    throw std::runtime_error(labels_path + ": " + std::to_string(labels.dims[0]) +
                             " labels for the " + std::to_string(images.dims[0]) + " images of " +
                             images_path);

  const auto n = static_cast<Eigen::Index>(images.dims[0]);
  Split s;
  s.labels.resize(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    const int label = labels.data[static_cast<std::size_t>(i)];
    if (label >= kClasses)
      throw std::runtime_error(labels_path + ": label " + std::to_string(label) + " of sample " +
                               std::to_string(i) + " is outside [0, " + std::to_string(kClasses) +
                               ")");
    s.labels(i) = label;
  }
  using Bytes = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, kPixels, Eigen::RowMajor>;
  s.images = Eigen::Map<const Bytes>(images.data.data(), n, kPixels).cast<float>() / 255.0f;
  return s;
}

/// Loads the four files from a folder. Throws std::runtime_error when one is missing or bad.
inline Dataset load(const std::string& folder) {
  std::string paths[4];
  for (int i = 0; i < 4; ++i) {
    paths[i] = find_file(folder, kFiles[i]);
    if (paths[i].empty())
      throw std::runtime_error(folder + ": no " + kFiles[i] + "(.gz); Fashion-MNIST comes with " +
                               "Debian's dataset-fashion-mnist, or pass its folder with --data");
  }
  return {load_split(paths[0], paths[1]), load_split(paths[2], paths[3])};
}

}  // namespace fmnist
