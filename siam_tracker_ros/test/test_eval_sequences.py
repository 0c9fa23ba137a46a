"""The sequence reader on folders the test writes: separators, NaN rows, ordering, errors."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared_data import need, SEQUENCES
from siam_tracker_ros.io.sequences import (
    list_sequences, load_frames, load_sequence, natural_key, read_groundtruth)


def _write_sequence(root: Path, name: str, gt_text: str, frame_names, size=(40, 30)):
    folder = root / name
    (folder / 'img').mkdir(parents=True)
    for k, frame in enumerate(frame_names):
        image = np.full((size[1], size[0], 3), 10 * k, dtype=np.uint8)
        assert cv2.imwrite(str(folder / 'img' / frame), image)
    (folder / 'groundtruth.txt').write_text(gt_text)
    return folder


def test_comma_tab_space_and_nan_rows(tmp_path):
    path = tmp_path / 'gt.txt'
    path.write_text('1,2,3,4\n5\t6\t7.5\t8\nNaN,NaN,NaN,NaN\n9 10  11 12\nnan,3,4,5\n\n\n')
    gt = read_groundtruth(path)
    assert gt.shape == (5, 4)
    np.testing.assert_array_equal(gt[[0, 1, 3]], [[1, 2, 3, 4], [5, 6, 7.5, 8], [9, 10, 11, 12]])
    assert np.isnan(gt[2]).all()
    assert np.isnan(gt[4]).all()       # any NaN makes the whole row 'absent'


def test_groundtruth_errors_name_the_line(tmp_path):
    path = tmp_path / 'gt.txt'
    path.write_text('1,2,3,4\n1,2,3\n')
    with pytest.raises(ValueError, match=r'gt.txt:2: expected 4 values'):
        read_groundtruth(path)
    path.write_text('1,2,3,4\n\n1,2,3,4\n')
    with pytest.raises(ValueError, match=r':2: expected 4 values'):
        read_groundtruth(path)
    path.write_text('1,2,x,4\n')
    with pytest.raises(ValueError, match=r':1: not a number'):
        read_groundtruth(path)


def test_frames_are_in_numeric_order(tmp_path):
    names = ['10.jpg', '2.jpg', '1.jpg', '9.png']
    folder = _write_sequence(tmp_path, 'Seq', '1,1,5,5\n' * 4, names)
    (folder / 'img' / 'notes.txt').write_text('not an image')
    seq = load_sequence(folder)
    assert [p.name for p in seq.frames] == ['1.jpg', '2.jpg', '9.png', '10.jpg']
    assert sorted(['img10.jpg', 'img2.jpg'], key=natural_key) == ['img2.jpg', 'img10.jpg']
    # zero padded names sort the same way as plain string order
    padded = [f'{k:04d}.jpg' for k in (3, 1, 20)]
    assert sorted(padded, key=natural_key) == sorted(padded)
    frames = load_frames(seq)
    assert len(frames) == 4 and frames[0].shape == (30, 40, 3) and frames[0].dtype == np.uint8
    # 1.jpg was written third (value 20), 10.jpg first (value 0): order follows the names
    assert int(np.median(frames[0])) == 20 and int(np.median(frames[3])) == 0


def test_list_sequences_skips_other_folders_and_selects(tmp_path):
    _write_sequence(tmp_path, 'beta', '1,1,5,5\nNaN,NaN,NaN,NaN\n', ['1.jpg', '2.jpg'])
    _write_sequence(tmp_path, 'Alpha', '1\t1\t5\t5\n2\t2\t5\t5\n', ['1.jpg', '2.jpg'])
    (tmp_path / 'licenses').mkdir()
    seqs = list_sequences(tmp_path)
    assert [s.name for s in seqs] == ['Alpha', 'beta']
    beta = seqs[1]
    assert beta.has_absent_frames and not seqs[0].has_absent_frames
    assert beta.init_box.as_tuple() == (1.0, 1.0, 5.0, 5.0)
    assert [s.name for s in list_sequences(tmp_path, ['beta'])] == ['beta']
    with pytest.raises(ValueError, match='no sequence gamma.*available: Alpha, beta'):
        list_sequences(tmp_path, ['gamma'])


def test_mismatch_and_bad_first_box_are_errors(tmp_path):
    folder = _write_sequence(tmp_path, 'short', '1,1,5,5\n', ['1.jpg', '2.jpg'])
    with pytest.raises(ValueError, match='2 images but 1 ground-truth rows'):
        load_sequence(folder)
    folder = _write_sequence(tmp_path, 'absent0', 'NaN,NaN,NaN,NaN\n1,1,5,5\n',
                             ['1.jpg', '2.jpg'])
    with pytest.raises(ValueError, match='first ground-truth row'):
        load_sequence(folder)


def test_real_sequence_reads():
    root = SEQUENCES
    need(root / 'Crossing')
    seq = list_sequences(root, ['Crossing'])[0]
    assert len(seq) == 120 and seq.gt.shape == (120, 4)
    assert seq.init_box.as_tuple() == (205.0, 151.0, 17.0, 50.0)
    assert not np.isnan(seq.gt).any()
