"""bench.resolution_ceiling: what a plan's grid alone costs, through the product's own export."""
import numpy as np

from bench.resolution_ceiling import ceiling_dice


def _organs(shape, spacing_zyx):
    """Four ellipsoids (mm radii), one per organ label, on a grid of the given spacing."""
    z, y, x = (np.arange(n) * s for n, s in zip(shape, spacing_zyx))
    z, y, x = np.meshgrid(z, y, x, indexing="ij")
    labels = np.zeros(shape, np.uint8)
    for label, (cz, cy, cx, rz, ry, rx) in enumerate(((60, 60, 50, 40, 35, 30), (50, 60, 105, 22, 15, 12),
                                                      (75, 30, 100, 25, 12, 14), (45, 100, 70, 8, 10, 25)), 1):
        labels[((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1] = label
    return labels


def test_linear_export_along_z_costs_less_than_nearest_on_thick_slices():
    spacing = np.array([4.0, 0.9, 0.9])
    labels = _organs((32, 140, 140), spacing)
    linear = ceiling_dice(labels, spacing, 5.0, export_order_z=1)
    nearest = ceiling_dice(labels, spacing, 5.0, export_order_z=0)
    assert min(linear.values()) > 0.9
    assert np.mean(list(linear.values())) > np.mean(list(nearest.values())) + 0.005, (linear, nearest)

