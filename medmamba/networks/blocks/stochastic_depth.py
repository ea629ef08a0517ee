"""Stochastic depth schedules."""


def drop_path_rates(rate: float, count: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over ``count`` blocks, as ``torch.linspace(0, rate,
    count)`` (plain floats, so that building on the ``meta`` device never reads a tensor).

    Args:
        rate: the last block's drop-path probability.
        count: the number of blocks.

    Returns:
        ``count`` rates.
    """
    return [rate * i / max(1, count - 1) for i in range(count)]
