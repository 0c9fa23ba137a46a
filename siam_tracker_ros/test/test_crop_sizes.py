"""Crop sizes a model's graphs cannot run are refused with the sizes it was built for."""

import numpy as np
import pytest

from shared_data import MODELS, need
from siam_tracker_ros.core.types import BBox
from siam_tracker_ros.factory import load_tracker


@pytest.fixture(scope='module')
def v3(model_cache_module):
    return load_tracker(need(MODELS / 'nanotrack-v3'))


@pytest.fixture(scope='module')
def model_cache_module(tmp_path_factory):
    import os
    old = os.environ.get('SIAM_MODEL_CACHE')
    os.environ['SIAM_MODEL_CACHE'] = str(tmp_path_factory.mktemp('cache'))
    yield
    if old is None:
        os.environ.pop('SIAM_MODEL_CACHE', None)
    else:
        os.environ['SIAM_MODEL_CACHE'] = old


@pytest.mark.parametrize('field,value', [('instance_size', 287), ('instance_size', 300),
                                         ('exemplar_size', 512)])
def test_sizes_the_static_graphs_refuse_are_refused_by_name(v3, field, value):
    before = v3.config
    with pytest.raises(ValueError) as err:
        v3.set_config(before.replace(**{field: value}))
    message = str(err.value)
    assert f'{field}={value}' in message
    assert 'built for exemplar_size=127, instance_size=255' in message
    assert v3.config == before   # nothing changed
    image = np.full((240, 320, 3), 90, np.uint8)
    image[100:140, 140:180] = 200
    v3.init(image, BBox(140, 100, 40, 40))
    assert v3.update(image).box.w > 0   # and the tracker still runs
    v3.stop()


def test_a_tracker_built_with_refused_sizes_fails_at_construction(v3):
    from siam_tracker_ros.core.tracker import SiameseTracker
    bad = v3.config.replace(instance_size=287)
    with pytest.raises(ValueError, match='instance_size=287'):
        SiameseTracker(v3.spec, v3.backend, bad)
