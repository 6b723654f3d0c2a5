"""Writes the generated part of the fuzzers' seed corpora (fuzz/corpus/<target>/).

Run with the project's Python (bash scripts/python.sh fuzz/make_seeds.py); it needs Pillow,
numpy and safetensors from that environment and Debian's Fashion-MNIST. From the first test
images of Fashion-MNIST it makes tiny IDX files (plain and gzipped, several element types) and
JPEG and PNG files in the colour types and layouts the decoder handles; it writes a safetensors
file with Python's safetensors package. The other seeds are files moa itself wrote (safetensors
from WriteSafetensors, results.jsonl lines of real runs, a job.json's train_args), the shipped
configs/*.ini and `moa sweep` command lines; they are committed as they are.
"""

import gzip
import io
import os
import struct

import numpy as np
from PIL import Image
from safetensors.numpy import save

HERE = os.path.dirname(os.path.abspath(__file__))
FASHION_MNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
FASHION_MNIST_LABELS = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
IDX_TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
                  np.float32: 0x0D, np.float64: 0x0E}


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def idx_bytes(array):
    code = IDX_TYPE_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def read_idx(path, count):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    per_item = int(np.prod(shape[1:])) if ndim > 1 else 1
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim, count=count * per_item)
    return payload.reshape((count,) + tuple(shape[1:]))


def encoded(image, format, **options):
    out = io.BytesIO()
    image.save(out, format=format, **options)
    return out.getvalue()


def main():
    images = read_idx(FASHION_MNIST, 2)
    labels = read_idx(FASHION_MNIST_LABELS, 4)
    write("idx", "images_2x28x28_u8.idx", idx_bytes(images))
    write("idx", "labels_4_u8.idx", idx_bytes(labels))
    write("idx", "images_2x28x28_u8.idx.gz", gzip.compress(idx_bytes(images), mtime=0))
    write("idx", "image_7x7_i16.idx", idx_bytes(images[0, ::4, ::4].astype(np.int16) - 128))
    write("idx", "labels_4_i32.idx", idx_bytes(labels.astype(np.int32)))
    write("idx", "image_7x7_f32.idx", idx_bytes(images[0, ::4, ::4].astype(np.float32) / 255))
    write("idx", "labels_2x2_f64.idx", idx_bytes(labels.reshape(2, 2).astype(np.float64)))
    write("idx", "labels_4_i8.idx", idx_bytes(labels.astype(np.int8)))

    gray = Image.fromarray(images[0])
    rgb = Image.merge("RGB", (gray, Image.fromarray(images[1]), gray.transpose(Image.FLIP_TOP_BOTTOM)))
    small = rgb.resize((14, 14))
    write("image", "gray.jpg", encoded(gray, "JPEG", quality=75))
    write("image", "rgb_420.jpg", encoded(rgb, "JPEG", quality=75))
    write("image", "rgb_444_q95.jpg", encoded(small, "JPEG", quality=95, subsampling=0))
    write("image", "rgb_progressive.jpg", encoded(small, "JPEG", quality=75, progressive=True))
    write("image", "cmyk_adobe.jpg", encoded(small.convert("CMYK"), "JPEG", quality=75))
    write("image", "gray.png", encoded(gray, "PNG"))
    write("image", "rgb.png", encoded(small, "PNG"))
    write("image", "rgba.png", encoded(small.convert("RGBA"), "PNG"))
    write("image", "gray_alpha.png", encoded(gray.resize((14, 14)).convert("LA"), "PNG"))
    write("image", "palette.png", encoded(small.convert("P", palette=Image.ADAPTIVE, colors=8), "PNG"))
    write("image", "gray_16bit.png",
          encoded(Image.fromarray(images[0, ::2, ::2].astype(np.uint16) * 257), "PNG"))
    write("image", "bilevel.png", encoded(gray.convert("1"), "PNG"))

    tensors = {
        "blocks.0.attn.qkv.lora.A": (images[0, :2, :8].astype(np.float32) / 255),
        "blocks.0.attn.qkv.lora.B": np.zeros((6, 2), dtype=np.float16),
        "head.bias": labels.astype(np.int64),
        "mask": labels > 4,
    }
    write("safetensors", "python_safetensors.safetensors",
          save(tensors, metadata={"format": "pt", "note": "written by Python's safetensors"}))


if __name__ == "__main__":
    main()
