"""Experiment planners: nnU-Net v1's default (ExperimentPlanner3D_v21) and a small demo plan."""
from __future__ import annotations

import numpy as np
from nnunet.experiment_planning.common_utils import get_pool_and_conv_props
from nnunet.experiment_planning.experiment_planner_baseline_3DUNet_v21 import ExperimentPlanner3D_v21
from batchgenerators.utilities.file_and_folder_operations import join

DEFAULT_PLANS_ID = "nnUNetPlansv2.1"
SMALL_PLANS_ID = "nnUNetPlans_small"
LOCALISER_PLANS_ID = "nnUNetPlans_localiser"


class SmallPlanner3D(ExperimentPlanner3D_v21):
    """A cheap 3d_fullres plan for CPU demos.

    Fixed coarse isotropic target spacing (5 mm), a fixed 40^3 patch (200 mm), 8 base features
    and 3 poolings down to a 5^3 bottleneck, so features stay at 8-16-32-64 (far under stock
    Generic_UNet's 320 cap: stock nnUNetTrainerV2.initialize_network rebuilds exactly this net
    from the plans alone). About 0.35 M parameters; sized so that training 5 folds fits about an
    hour of a 2-core CPU and 5 folds x 8 flips on a typical abdominal CT take about a minute.
    """
    TARGET_SPACING_MM = 5.0
    PATCH = (40, 40, 40)
    # v1's segmentation_export_params, which its validation, predict and ours all read from the
    # plans: linear along the low-resolution axis of an anisotropic CT, where v1's default takes
    # the nearest 5 mm slice (docs/training.md, "The export along z")
    EXPORT_PARAMS = {"force_separate_z": None, "interpolation_order": 1, "interpolation_order_z": 1}
    BASE_FEATURES = 8
    MAX_POOLS = 4
    BATCH_SIZE = 2

    def __init__(self, folder_with_cropped_data, preprocessed_output_folder):
        super().__init__(folder_with_cropped_data, preprocessed_output_folder)
        self.data_identifier = "nnUNetData_plans_small"
        self.plans_fname = join(self.preprocessed_output_folder, SMALL_PLANS_ID + "_plans_3D.pkl")
        self.unet_base_num_features = self.BASE_FEATURES
        self.unet_max_num_filters = 128
        self.unet_max_numpool = self.MAX_POOLS
        self.unet_featuremap_min_edge_length = 3
        self.how_much_of_a_patient_must_the_network_see_at_stage0 = 1e12  # never a lowres stage

    def get_target_spacing(self):
        return np.array([self.TARGET_SPACING_MM] * 3, dtype=float)

    def save_my_plans(self):
        self.plans["segmentation_export_params"] = dict(self.EXPORT_PARAMS)
        super().save_my_plans()

    def get_properties_for_stage(self, current_spacing, original_spacing, original_shape, num_cases,
                                 num_modalities, num_classes):
        new_median_shape = np.round(original_spacing / current_spacing * original_shape).astype(int)
        num_pool, pool_sizes, conv_sizes, patch, _ = get_pool_and_conv_props(
            current_spacing, list(self.PATCH), self.unet_featuremap_min_edge_length, self.unet_max_numpool)
        return {
            'batch_size': self.BATCH_SIZE,
            'num_pool_per_axis': num_pool,
            'patch_size': np.array(patch),
            'median_patient_size_in_voxels': new_median_shape,
            'current_spacing': current_spacing,
            'original_spacing': original_spacing,
            'do_dummy_2D_data_aug': False,
            'pool_op_kernel_sizes': pool_sizes,
            'conv_kernel_sizes': conv_sizes,
        }


class LocaliserPlanner3D(SmallPlanner3D):
    """The localiser of two-stage prediction: 8 mm voxels and a 32^3 patch (256 mm), so that a
    512 x 512 x 200 CT is a few dozen cheap tiles. It only has to say where the organs are; the
    full-resolution folds draw their outlines."""
    TARGET_SPACING_MM = 8.0
    PATCH = (32, 32, 32)
    MAX_POOLS = 3

    def __init__(self, folder_with_cropped_data, preprocessed_output_folder):
        super().__init__(folder_with_cropped_data, preprocessed_output_folder)
        self.data_identifier = "nnUNetData_plans_localiser"
        self.plans_fname = join(self.preprocessed_output_folder, LOCALISER_PLANS_ID + "_plans_3D.pkl")
        self.unet_max_numpool = self.MAX_POOLS


PLANNERS = {"small": (SmallPlanner3D, SMALL_PLANS_ID), "default": (ExperimentPlanner3D_v21, DEFAULT_PLANS_ID),
            "localiser": (LocaliserPlanner3D, LOCALISER_PLANS_ID)}
