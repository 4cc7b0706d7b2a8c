"""The coarse 'motion' frame drawn while the camera moves stays close to the bake frame
it stands in for, and a bad quality name is refused with the field named."""

import numpy as np
import pytest

from tinyserve_core.errors import ConfigError


def test_motion_frame_is_close_to_the_bake_frame(lab):
    cam = lab.camera(azimuth=30, elevation=40, size=96)
    motion, bake = lab.render(cam, "motion"), lab.render(cam, "bake")
    mse = float(np.mean((motion.rgb - bake.rgb) ** 2))
    assert -10 * np.log10(mse) > 28.0
    assert (motion.label == bake.label).mean() > 0.97


def test_unknown_quality_names_the_field(lab):
    with pytest.raises(ConfigError) as e:
        lab.render(lab.camera(size=16), "fast")
    assert e.value.field == "quality"
