"""Generic concepts a scene may lack: the 80 COCO categories and common household,
outdoor and abstract things. A query that matches one of these better than any object of
the scene asks for something absent. The list is not tuned to any scene: `ObjectIndex`
drops the concepts a scene's own objects are named by (a scene with a mug drops "cup"),
which is the calibration against the scene."""

COCO = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange fruit", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote control", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
HOUSEHOLD = (
    "piano", "window", "door", "sofa", "armchair", "stool", "bookshelf", "wardrobe", "cupboard", "drawer",
    "dresser", "desk", "shelf", "mirror", "painting", "picture frame", "poster", "rug", "carpet", "curtain",
    "blinds", "pillow", "cushion", "blanket", "mattress", "television", "computer", "monitor", "phone",
    "speaker", "radio", "camera", "printer", "fan", "heater", "radiator", "air conditioner", "fireplace",
    "chandelier", "ceiling light", "candle", "kettle", "teapot", "plate", "glass", "jar", "pan", "pot lid",
    "fridge", "freezer", "dishwasher", "washing machine", "stove", "bathtub", "shower", "towel", "soap",
    "toothpaste", "shoe", "boot", "sock", "hat", "coat", "jacket", "shirt", "dress", "glasses", "watch",
    "wallet", "key", "pen", "pencil", "notebook", "newspaper", "envelope", "calendar", "guitar", "violin",
    "drum", "trophy", "statue", "vacuum cleaner", "broom", "mop", "bucket", "ladder", "hammer", "screwdriver",
    "drill", "toolbox", "staircase", "ceiling", "light switch", "power socket", "cable", "basket", "bag",
    "flower", "tree", "grass", "rock", "sand", "water", "fish", "rabbit", "mouse animal", "spider", "baby",
    "child", "man", "woman", "robot", "moon", "sun", "star", "cloud", "mountain", "river", "road", "house",
    "building", "bridge", "fence", "gate", "bottle of wine", "bread", "cheese", "egg", "meat", "soup",
    "coffee machine", "bicycle helmet", "football", "basketball", "tennis ball", "video game", "doll",
    "rope", "tent", "sword", "gun", "money", "coin", "letter", "map", "flag", "ticket", "medicine",
)
GENERIC_CONCEPTS = tuple(dict.fromkeys(COCO + HOUSEHOLD))
