"""OpenVLA contract: prompt, action tokens, un-normalisation, gripper, images."""

import numpy as np
import pytest

from tgrpo_ros.policy import contract

STEP = 2.0 / 255.0  # spacing of the 256 bin edges on [-1, 1]


def test_prompt_text():
    assert contract.build_prompt('Pick up the Milk') == (
        'In: What action should the robot take to pick up the milk?\nOut:')
    with pytest.raises(TypeError, match='str'):
        contract.build_prompt(3)


def test_bin_edges_and_centres():
    edges = contract.bin_edges()
    centres = contract.bin_centers()
    assert edges.shape == (256,) and centres.shape == (255,)
    assert edges[0] == -1.0 and edges[-1] == 1.0
    np.testing.assert_allclose(edges[10], -1.0 + 10 * STEP)
    np.testing.assert_allclose(centres[0], -1.0 + 1.0 / 255.0)
    np.testing.assert_allclose(centres[127], 0.0, atol=1e-15)
    np.testing.assert_allclose(centres[254], 1.0 - 1.0 / 255.0)


@pytest.mark.parametrize('value, token', [
    (-1.0, 31999),  # digitize -> 1
    (1.0, 31744),  # digitize -> 256
    (0.0, 31872),  # edges[127] < 0 < edges[128]: digitize -> 128
    (-7.0, 31999),  # clipped to -1
    (1.5, 31744),  # clipped to +1
    (-1.0 + 10 * STEP - 1e-9, 31990),  # just below edge 10: bin 10
    (-1.0 + 10 * STEP + 1e-9, 31989),  # just above edge 10: bin 11
])
def test_encode_hand_values(value, token):
    assert contract.encode_actions([value]).tolist() == [token]


@pytest.mark.parametrize('token, value', [
    (31999, -1.0 + 1.0 / 255.0),  # centre index 0
    (31872, 0.0),  # centre index 127
    (31745, 1.0 - 1.0 / 255.0),  # centre index 254
    (31744, 1.0 - 1.0 / 255.0),  # index 255 is clipped to 254
])
def test_decode_hand_values(token, value):
    np.testing.assert_allclose(contract.decode_action_tokens([token]), [value], atol=1e-15)


def test_decode_rejects_non_action_ids():
    with pytest.raises(ValueError, match='31743'):
        contract.decode_action_tokens([31800, 31743])
    with pytest.raises(ValueError, match='32000'):
        contract.decode_action_tokens([32000])
    with pytest.raises(TypeError, match='integers'):
        contract.decode_action_tokens([31800.0])


def test_encode_decode_round_trip_within_one_bin():
    values = np.linspace(-0.99, 0.99, 101)
    decoded = contract.decode_action_tokens(contract.encode_actions(values))
    assert np.max(np.abs(decoded - values)) <= STEP / 2 + 1e-12


def test_encode_rejects_nan():
    with pytest.raises(ValueError, match='finite'):
        contract.encode_actions([0.0, np.nan])


def test_unnormalize_libero_object():
    stats = contract.LIBERO_OBJECT_STATS
    ones = contract.unnormalize_actions(np.ones(7), stats)
    np.testing.assert_allclose(ones[:6], [0.8464, 0.8438, 0.9375, 0.0814, 0.1489, 0.0868])
    assert ones[6] == 1.0  # gripper passes through
    minus = contract.unnormalize_actions(-np.ones(7), stats)
    np.testing.assert_allclose(minus[:6], [-0.5384, -0.8759, -0.9375, -0.0696, -0.1168, -0.1596])
    assert minus[6] == -1.0
    zero = contract.unnormalize_actions(np.zeros((2, 7)), stats)
    np.testing.assert_allclose(zero[1, :3], [0.154, -0.01605, 0.0])  # (q01 + q99) / 2
    with pytest.raises(ValueError, match=r'\[\.\.\., 7\]'):
        contract.unnormalize_actions(np.zeros(6), stats)


def test_norm_stats_validation_and_selection():
    with pytest.raises(ValueError, match='7 entries'):
        contract.ActionNormStats(q01=(0,) * 6, q99=(1,) * 7, mask=(True,) * 7)
    with pytest.raises(ValueError, match='q01 must be <= q99'):
        contract.ActionNormStats(q01=(2,) * 7, q99=(1,) * 7, mask=(True,) * 7)
    stats = {'libero_object_no_noops': contract.LIBERO_OBJECT_STATS.to_openvla(),
             'bridge_orig': contract.ActionNormStats((0,) * 7, (1,) * 7, (True,) * 7)
             .to_openvla()}
    assert contract.select_norm_stats(stats, 'libero_object') == contract.LIBERO_OBJECT_STATS
    with pytest.raises(ValueError, match='bridge_orig, libero_object_no_noops'):
        contract.select_norm_stats(stats, 'libero_goal')
    with pytest.raises(ValueError, match='pass unnorm_key'):
        contract.select_norm_stats(stats)


def test_libero_gripper():
    actions = np.zeros((3, 7))
    actions[:, 6] = [1.0, 0.0, 0.8]  # open, closed, mostly open
    out = contract.libero_gripper(actions)
    assert out[:, 6].tolist() == [-1.0, 1.0, -1.0]  # LIBERO: -1 open, +1 close
    assert actions[:, 6].tolist() == [1.0, 0.0, 0.8]  # input untouched


def test_preprocess_rotates_and_crops():
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    image[:128, :, 0] = 255  # top half red before the 180-degree rotation
    uncropped = contract.preprocess_libero_image(image, crop_area=1.0)
    assert uncropped.shape == (224, 224, 3) and uncropped.dtype == np.uint8
    assert uncropped[200, 100, 0] == 255 and uncropped[20, 100, 0] == 0  # red now at bottom
    cropped = contract.preprocess_libero_image(image)
    assert cropped.shape == (224, 224, 3)
    # A dot in the corner disappears with the 0.9-area crop (side 0.949: 5.7 px per side).
    corner = np.zeros((256, 256, 3), dtype=np.uint8)
    corner[-3:, -3:] = 255
    assert contract.preprocess_libero_image(corner, crop_area=1.0)[:2, :2].max() > 0
    assert contract.preprocess_libero_image(corner)[:4, :4].max() == 0
    with pytest.raises(ValueError, match='uint8'):
        contract.preprocess_libero_image(image.astype(np.float32))


def test_camera_preprocess_keeps_orientation_for_any_size():
    # A 640 x 480 (W x H) frame: left half red, top half green.
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    image[:, :320, 0] = 255
    image[:240, :, 1] = 255
    out = contract.preprocess_camera_image(image)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # The crop is centred, so the halves stay halves and nothing is rotated.
    assert out[:, :108, 0].min() == 255 and out[:, 116:, 0].max() == 0
    assert out[:108, :, 1].min() == 255 and out[116:, :, 1].max() == 0
    # On a square LIBERO frame it is the LIBERO pipeline without the rotation.
    frame = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    np.testing.assert_array_equal(contract.preprocess_camera_image(frame[::-1, ::-1]),
                                  contract.preprocess_libero_image(frame))
    # The 0.9-area crop drops a dot in the corner (side 0.949: 5.7 px per side at 224).
    corner = np.zeros((300, 400, 3), dtype=np.uint8)
    corner[:3, :3] = 255
    assert contract.preprocess_camera_image(corner, crop_area=1.0)[:2, :2].max() > 0
    assert contract.preprocess_camera_image(corner)[:4, :4].max() == 0
    assert contract.get_preprocessor('camera') is contract.preprocess_camera_image
    with pytest.raises(ValueError, match="unknown image preprocessing 'x'; available: "
                       'libero, camera'):
        contract.get_preprocessor('x')
    with pytest.raises(ValueError, match='uint8'):
        contract.preprocess_camera_image(image[:, :, :2])


def test_pixel_values_normalisation():
    images = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    images[1] = 255
    pixels = contract.pixel_values_from_images(images)
    assert pixels.shape == (2, 6, 224, 224) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[0, :, 0, 0],
                               [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225, -1, -1, -1],
                               rtol=1e-6)
    np.testing.assert_allclose(pixels[1, :, 5, 7],
                               [0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225, 1, 1, 1],
                               rtol=1e-6)
    small = contract.pixel_values_from_images(np.full((1, 128, 128, 3), 255, np.uint8))
    assert small.shape == (1, 6, 224, 224)  # resized
    with pytest.raises(ValueError, match='image 0'):
        contract.pixel_values_from_images(np.zeros((1, 224, 224, 4), np.uint8))
