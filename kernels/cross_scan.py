"""PLACEHOLDER (being replaced by the kernels work): torch cross-scan/merge."""
import torch


def _routes(x, spatial):
    b, c = x.shape[:2]
    n = len(spatial)
    orders = [tuple(range(n))[::-1]] if n == 2 else None
    return orders


def cross_scan_2d(x):
    b, c, h, w = x.shape
    row = x.flatten(2)
    col = x.transpose(2, 3).flatten(2)
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], 1)


def cross_merge_2d(y):
    b, k, c, h, w = y.shape
    y = y.flatten(3)
    row = y[:, 0] + y[:, 2].flip(-1)
    col = y[:, 1] + y[:, 3].flip(-1)
    col = col.view(b, c, w, h).transpose(2, 3).flatten(2)
    return row + col


def cross_scan_3d(x):
    b, c = x.shape[:2]
    seqs = [x.permute(0, 1, *[2 + i for i in p]).flatten(2) for p in ((0, 1, 2), (1, 2, 0), (2, 0, 1))]
    return torch.stack(seqs + [s.flip(-1) for s in seqs], 1)


def cross_merge_3d(y):
    b, k, c, d, h, w = y.shape
    y = y.flatten(3)
    out = 0
    shape = (d, h, w)
    for i, p in enumerate(((0, 1, 2), (1, 2, 0), (2, 0, 1))):
        s = y[:, i] + y[:, i + 3].flip(-1)
        s = s.view(b, c, *[shape[j] for j in p])
        inv = [p.index(j) for j in range(3)]
        out = out + s.permute(0, 1, *[2 + j for j in inv]).flatten(2)
    return out


def cross_scan(x, routes=None):
    raise NotImplementedError


def cross_merge(y, routes=None):
    raise NotImplementedError
