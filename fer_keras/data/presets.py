"""The augmentation presets as plain settings, which `fer_keras.data.augment` turns into layers.
Free of TensorFlow, so the training config names them without loading it."""

_STRONG = {
    "flip": True,
    "rotation_deg": 15,
    "translation": 0.1,
    "zoom": 0.1,
    "shear": 0.1,
    "brightness": 0.2,
    "contrast": 0.2,
    "erasing_prob": 0.1,
    "noise_std": 3.0,  # in 0..255 pixel units
}
# Preset -> knob values; `fer_keras.data.augment` applies the knobs in the order of its stages.
PRESET_KNOBS = {
    "none": {},
    "light": {"flip": True, "rotation_deg": 10, "brightness": 0.2, "contrast": 0.2},
    # light plus shifts of up to 10% (whole pixels): the random-crop regulariser of the FER2013 papers.
    "medium": {"flip": True, "rotation_deg": 10, "translation": 0.1, "brightness": 0.2, "contrast": 0.2},
    "strong": _STRONG,
    # The original projects' pipelines, with their limits and per-op probabilities.
    # "Slight" random rotation only, no flip or colour (project 001); +-10 degrees as project 002's
    # RandomRotation(10).
    "rotation": {"rotation_deg": 10},
    # RandomHorizontalFlip, RandomRotation(10): project 002's first CNN; project 004's CBAM CNN.
    "flip_rotation": {"flip": True, "rotation_deg": 10},
    # Project 000 (torchvision): flip, RandomRotation(10), RandomAffine(translate=(0.1, 0.1)).
    "torchvision_000": {"flip": True, "rotation_deg": 10, "translation": 0.1},
    # Project 002's ImprovedCNN (albumentations): Rotate(limit=15, p=0.5), HorizontalFlip(p=0.5),
    # RandomBrightnessContrast(p=0.3) with its default limits of 0.2.
    "albumentations_002_improved": {
        "flip": True, "rotation_deg": 15, "geometry_p": 0.5, "brightness": 0.2, "contrast": 0.2, "photometric_p": 0.3,
    },
    # Project 002's basic CNN, ResNet and ViT (albumentations): HorizontalFlip(p=0.5),
    # ShiftScaleRotate(shift 0.1, scale 0.1, rotate 15, p=0.5), RandomBrightnessContrast(0.2, 0.2, p=0.5),
    # GaussNoise(var_limit=(10, 50), p=0.3), CoarseDropout(8 holes of 8x8 pixels, p=0.3).
    "albumentations_002": {
        "flip": True,
        "rotation_deg": 15,
        "translation": 0.1,
        "zoom": 0.1,
        "geometry_p": 0.5,
        "brightness": 0.2,
        "contrast": 0.2,
        "photometric_p": 0.5,
        "noise_var": (10.0, 50.0),  # grey levels squared: std 3.2 to 7.1
        "noise_p": 0.3,
        "holes": (8, 8),  # (count, side in pixels), filled with 0 as albumentations does
        "holes_p": 0.3,
    },
    # Project 004's deep CNN v3 (torchvision): flip, rotation 15, translation 10%, scale 90-110%,
    # shear, brightness/contrast jitter, RandomErasing(p=0.1). It states no shear or jitter strength:
    # these are strong's, and this is strong without its noise.
    "torchvision_004": {knob: value for knob, value in _STRONG.items() if knob != "noise_std"},
}
PRESETS = tuple(PRESET_KNOBS)
