#!/usr/bin/env python3
"""Writes rules/imagenet1k.yaml: ferrovision's default label rules for the 1000 ImageNet classes,
in the spirit of PhotoPrism's rules.yml. Every class is either mapped (label, categories, priority,
threshold) or deliberately ignored. Keys are 0-based ImageNet-1k class ids (torchvision / Keras
order; TF-slim models shift by one for their background class, which ferrovision handles).

    python scripts/gen_default_rules.py ../shared/data/labels/imagenet_1001_tfslim.txt
"""
import sys
from pathlib import Path


def r(lo, hi=None):
    return range(lo, (hi if hi is not None else lo) + 1)


# (class ids, label, categories, priority) — one line per group of classes. Probabilities of the
# classes that share a label are added up (118 dog breeds make one confident "dog").
GROUPS = [
    (r(0, 6), "fish", ["animal", "water"], 3), (r(389, 397), "fish", ["animal", "water"], 3),
    (r(7, 24), "bird", ["animal"], 4), (r(80, 100), "bird", ["animal"], 4), (r(127, 146), "bird", ["animal"], 4),
    (r(25, 29), "salamander", ["animal"], 2), (r(30, 32), "frog", ["animal"], 3),
    (r(33, 37), "turtle", ["animal", "reptile"], 3), (r(38, 48), "lizard", ["animal", "reptile"], 3),
    (r(49, 50), "crocodile", ["animal", "reptile"], 3), (r(51), "dinosaur", ["animal"], 1),
    (r(52, 68), "snake", ["animal", "reptile"], 3), (r(69), "fossil", ["nature"], 1),
    (r(70, 77), "spider", ["animal", "insect"], 3), (r(78), "tick", ["animal", "insect"], 2),
    (r(79), "centipede", ["animal", "insect"], 2),
    (r(101), "elephant", ["animal", "wildlife"], 4), (r(385, 386), "elephant", ["animal", "wildlife"], 4),
    (r(102), "echidna", ["animal", "wildlife"], 2), (r(103), "platypus", ["animal", "wildlife"], 2),
    (r(104), "kangaroo", ["animal", "wildlife"], 3), (r(105), "koala", ["animal", "wildlife"], 3),
    (r(106), "wombat", ["animal", "wildlife"], 2),
    (r(107), "jellyfish", ["animal", "water"], 3), (r(108, 109), "coral", ["animal", "water"], 2),
    (r(110, 111), "worm", ["animal"], 1), (r(112, 116), "snail", ["animal"], 2),
    (r(117), "nautilus", ["animal", "water"], 2), (r(118, 121), "crab", ["animal", "water"], 3),
    (r(122, 124), "lobster", ["animal", "water"], 3), (r(125), "crab", ["animal", "water"], 3),
    (r(126), "isopod", ["animal"], 1),
    (r(147, 148), "whale", ["animal", "water"], 4), (r(149), "dugong", ["animal", "water"], 2),
    (r(150), "seal", ["animal", "water"], 3),
    (r(151, 268), "dog", ["animal", "pet"], 5), (r(269, 271), "wolf", ["animal", "wildlife"], 4),
    (r(272), "coyote", ["animal", "wildlife"], 3), (r(273, 275), "wild dog", ["animal", "wildlife"], 3),
    (r(276), "hyena", ["animal", "wildlife"], 3), (r(277, 280), "fox", ["animal", "wildlife"], 4),
    (r(281, 285), "cat", ["animal", "pet"], 5),
    (r(286), "cougar", ["animal", "wildlife"], 4), (r(287), "lynx", ["animal", "wildlife"], 4),
    (r(288, 289), "leopard", ["animal", "wildlife"], 4), (r(290), "jaguar", ["animal", "wildlife"], 4),
    (r(291), "lion", ["animal", "wildlife"], 4), (r(292), "tiger", ["animal", "wildlife"], 4),
    (r(293), "cheetah", ["animal", "wildlife"], 4), (r(294, 297), "bear", ["animal", "wildlife"], 4),
    (r(298, 299), "mongoose", ["animal", "wildlife"], 2),
    (r(300, 307), "beetle", ["animal", "insect"], 3), (r(308), "fly", ["animal", "insect"], 2),
    (r(309), "bee", ["animal", "insect"], 3), (r(310), "ant", ["animal", "insect"], 3),
    (r(311, 312), "grasshopper", ["animal", "insect"], 3), (r(313, 318), "insect", ["animal", "insect"], 2),
    (r(319, 320), "dragonfly", ["animal", "insect"], 3), (r(321, 326), "butterfly", ["animal", "insect"], 4),
    (r(327), "starfish", ["animal", "water"], 3), (r(328, 329), "sea urchin", ["animal", "water"], 2),
    (r(330, 332), "rabbit", ["animal", "pet"], 4), (r(333), "hamster", ["animal", "pet"], 4),
    (r(334), "porcupine", ["animal", "wildlife"], 3), (r(335), "squirrel", ["animal", "wildlife"], 4),
    (r(336), "marmot", ["animal", "wildlife"], 3), (r(337), "beaver", ["animal", "wildlife"], 3),
    (r(338), "guinea pig", ["animal", "pet"], 4), (r(339), "horse", ["animal", "farm"], 4),
    (r(340), "zebra", ["animal", "wildlife"], 4), (r(341, 343), "pig", ["animal", "farm"], 3),
    (r(344), "hippo", ["animal", "wildlife"], 4), (r(345, 346), "cattle", ["animal", "farm"], 4),
    (r(347), "bison", ["animal", "wildlife"], 4), (r(348), "sheep", ["animal", "farm"], 4),
    (r(349, 350), "goat", ["animal", "wildlife"], 3), (r(351, 353), "antelope", ["animal", "wildlife"], 3),
    (r(354), "camel", ["animal"], 4), (r(355), "llama", ["animal", "farm"], 4),
    (r(356, 359), "weasel", ["animal", "wildlife"], 2), (r(360), "otter", ["animal", "wildlife"], 3),
    (r(361), "skunk", ["animal", "wildlife"], 3), (r(362), "badger", ["animal", "wildlife"], 3),
    (r(363), "armadillo", ["animal", "wildlife"], 3), (r(364), "sloth", ["animal", "wildlife"], 3),
    (r(365, 369), "ape", ["animal", "wildlife"], 4), (r(370, 382), "monkey", ["animal", "wildlife"], 4),
    (r(383, 384), "lemur", ["animal", "wildlife"], 3), (r(387, 388), "panda", ["animal", "wildlife"], 4),
    # vehicles
    ([407, 436, 468, 511, 609, 627, 656, 661, 717, 751, 817], "car", ["vehicle"], 4),
    ([675, 734], "van", ["vehicle"], 3), ([555, 569, 864, 867], "truck", ["vehicle"], 3),
    ([586, 847], "tank", ["vehicle", "weapon"], 3), ([595, 866, 856, 730], "tractor", ["vehicle", "farm"], 3),
    ([654, 779, 874], "bus", ["vehicle"], 4),
    ([466, 547, 565, 705, 820, 829], "train", ["vehicle"], 4), ([444, 671, 870, 880], "bicycle", ["vehicle"], 4),
    ([665, 670], "scooter", ["vehicle"], 3), ([573, 575], "kart", ["vehicle"], 2),
    ([403, 472, 484, 510, 554, 576, 625, 628, 694, 724, 780, 814, 833, 871, 914], "boat", ["vehicle", "water"], 4),
    ([913], "shipwreck", ["water"], 2), ([404, 895], "airplane", ["vehicle"], 4), ([405], "airship", ["vehicle"], 3),
    ([812], "space shuttle", ["vehicle"], 3), ([908], "airplane", ["vehicle"], 2),
    ([450, 537, 802, 803], "snow vehicle", ["vehicle", "snow"], 2), ([408], "vehicle", ["vehicle"], 2),
    ([603, 612, 690], "cart", ["vehicle"], 2), ([428, 791], "cart", ["object"], 1),
    ([561, 757, 660], "vehicle", ["vehicle"], 2), ([701], "parachute", ["sport"], 3), ([417], "balloon", ["object"], 2),
    # food and drink
    ([924, 925, 926, 927, 935, 959, 962, 964, 965], "food", ["food"], 4), ([923], "dish", ["food"], 3),
    ([928, 929], "ice cream", ["food"], 4), ([930, 931, 932], "bread", ["food"], 4),
    ([933], "burger", ["food"], 4), ([934], "hot dog", ["food"], 4), ([963], "pizza", ["food"], 4),
    ([960], "chocolate", ["food"], 3), ([961], "dough", ["food"], 3),
    (r(936, 947), "vegetables", ["food", "plant"], 3), (r(948, 957), "fruit", ["food", "plant"], 4),
    ([966, 907], "wine", ["drink"], 4), ([967, 550], "coffee", ["drink"], 4), ([968, 504], "cup", ["drink"], 2),
    ([969], "drink", ["drink"], 2), ([440, 441], "beer", ["drink"], 4), ([737, 898, 899, 901], "bottle", ["drink"], 2),
    ([509, 415], "bakery", ["food", "shop"], 3),
    # nature and landscape
    ([970], "mountain", ["nature", "landscape"], 4), ([971], "bubble", ["object"], 1),
    ([972, 976], "cliff", ["nature", "landscape"], 4), ([973], "reef", ["nature", "water"], 4),
    ([974], "geyser", ["nature", "landscape"], 3), ([975], "lake", ["nature", "water", "landscape"], 4),
    ([977, 978], "beach", ["nature", "water", "landscape"], 5), ([979], "valley", ["nature", "landscape"], 4),
    ([980], "volcano", ["nature", "landscape"], 4), ([984], "field", ["nature", "plant"], 3),
    ([985, 986], "flower", ["nature", "plant"], 5), ([987, 998], "corn", ["plant", "food"], 3),
    ([988, 989, 990], "plant", ["nature", "plant"], 2), (r(991, 997), "mushroom", ["nature", "plant"], 4),
    ([958], "hay", ["farm"], 2), ([815], "spider web", ["nature"], 2),
    # people and clothing
    ([981], "athlete", ["people", "sport"], 4), ([982], "wedding", ["people", "event"], 4),
    ([983], "diver", ["people", "water", "sport"], 4),
    ([399, 400, 474, 501, 568, 578, 601, 608, 610, 614, 617, 655, 689, 697, 735, 775, 834, 841, 869, 887],
     "clothing", ["people", "clothing"], 2),
    ([445, 459, 638, 639, 842], "swimwear", ["people", "clothing"], 2), ([652, 439, 715], "uniform", ["people"], 3),
    ([411, 443, 452, 515, 808, 433, 793, 796, 903, 824, 552], "accessory", ["clothing"], 1),
    ([457, 906, 451], "tie", ["clothing"], 2), ([502, 514, 630, 770, 774, 806], "shoes", ["clothing"], 2),
    ([667], "graduation", ["people", "event"], 3), ([836, 837], "sunglasses", ["clothing"], 2),
    ([643, 570, 691], "mask", ["object"], 2), ([658], "gloves", ["clothing"], 1), ([679], "jewelry", ["clothing"], 2),
    # buildings and places
    ([410, 424, 425, 449, 454, 467, 497, 498, 500, 580, 582, 624, 634, 660, 663, 668, 698, 727, 743, 762, 788, 832,
      860, 865, 915], "building", ["building"], 3),
    ([483], "castle", ["building"], 4), ([442, 406], "church", ["building"], 3), ([538], "dome", ["building"], 2),
    ([853, 858], "roof", ["building"], 2), ([873, 682, 649, 863], "monument", ["building"], 3),
    ([821, 839, 888], "bridge", ["building"], 4), ([525], "dam", ["building", "water"], 3),
    ([460, 536, 718], "harbor", ["water"], 3), ([540], "oil rig", ["water"], 2), ([900], "tower", ["building"], 2),
    ([884], "vault", ["building"], 1), ([562], "fountain", ["building", "water"], 3),
    ([706, 703], "outdoor", ["place"], 2), ([489, 716, 912, 825], "fence", ["place"], 1),
    ([919, 920], "street", ["place"], 3), ([819, 854], "stage", ["event"], 3), ([476], "carousel", ["event"], 3),
    ([645], "maypole", ["event"], 2), ([646], "maze", ["place"], 2),
    # music
    ([401, 402, 420, 432, 486, 494, 513, 541, 546, 558, 566, 577, 579, 593, 594, 641, 642, 683, 684, 687, 699, 776,
      822, 875, 881, 889], "musical instrument", ["music"], 4),
    ([542], "drumstick", ["music"], 1),
    # sport
    ([416, 602, 702], "gymnastics", ["sport"], 3), ([422, 543], "fitness", ["sport"], 3),
    ([429, 430, 522, 574, 722, 746, 768, 805, 852, 890], "ball", ["sport"], 3), ([560, 518], "helmet", ["sport"], 2),
    ([747, 752], "sport", ["sport"], 2), ([795], "skiing", ["sport", "snow"], 3), ([672, 797], "camping", ["outdoor"], 3),
    # electronics
    ([482, 485, 592, 598, 605, 632, 662, 688, 713, 742, 745, 754, 848, 851], "electronics", ["electronics"], 2),
    ([487, 528, 707], "phone", ["electronics"], 3), ([508, 527, 590, 620, 664, 673, 782, 878, 810], "computer",
                                                      ["electronics"], 3),
    ([732, 759, 622], "camera", ["electronics"], 3), ([761], "remote control", ["electronics"], 2),
    ([916], "screenshot", ["document"], 3), ([409, 530, 531, 892, 826, 604, 835], "clock", ["object"], 2),
    # weapons (moderation)
    ([413, 764, 763], "gun", ["weapon"], 5), ([471, 657, 744], "weapon", ["weapon"], 4), ([777, 787], "weapon", ["weapon"], 2),
    ([461, 490, 524, 465], "armor", ["weapon"], 2), ([456], "bow", ["weapon", "sport"], 2), ([583], "guillotine", ["weapon"], 2),
    # furniture and home
    ([423, 559, 765, 857], "chair", ["furniture"], 3), ([431, 516, 520, 564], "bed", ["furniture"], 3),
    ([453, 493, 495, 548, 894, 492], "cabinet", ["furniture"], 2), ([526, 532], "table", ["furniture"], 3),
    ([831], "couch", ["furniture"], 3), ([736], "pool table", ["furniture", "sport"], 2),
    ([619, 846], "lamp", ["furniture"], 2), ([721, 750], "bedding", ["furniture"], 2),
    ([741, 539], "rug", ["furniture"], 1), ([789, 799, 904, 905, 794], "window", ["building"], 1),
    ([435, 876, 896, 861], "bathroom", ["home"], 2), ([470], "candle", ["home"], 2), ([883], "vase", ["home"], 2),
    ([534, 651, 760, 827, 859, 891, 897, 882, 545, 811], "appliance", ["home"], 2),
    ([469, 499, 503, 505, 521, 544, 567, 618, 647, 659, 725, 729, 738, 766, 773, 809, 813, 828, 849, 909, 910, 572],
     "kitchenware", ["home"], 2),
    ([686, 535, 479, 475, 581, 785], "car part", ["vehicle"], 1), ([571, 704], "street furniture", ["place"], 1),
    ([637, 636, 549], "mail", ["object"], 2), ([496, 607], "holiday", ["event"], 3),
    ([850, 719, 611], "toy", ["object"], 3), ([709, 710, 418, 563, 749, 767, 681, 446, 769, 798], "stationery",
                                              ["object"], 1),
    ([917, 918, 921, 922], "document", ["document"], 2), ([711, 629, 631, 551, 585, 838], "cosmetics", ["object"], 1),
    ([414, 748, 893, 588, 790, 636], "bag", ["object"], 2), ([879], "umbrella", ["object"], 3),
    ([462, 463, 587, 596, 477, 491, 740, 784, 792, 714, 731, 600], "tool", ["object"], 1),
    ([426, 635, 685, 778, 826], "instrument", ["object"], 1), ([447, 633, 872], "optics", ["object"], 1),
    ([412, 427, 756, 463], "container", ["object"], 1), ([437, 818, 862], "light", ["object"], 1),
    ([448], "birdhouse", ["object"], 2), ([845, 712, 720, 438, 678, 419, 840], "medical", ["medical"], 2),
    ([830, 823, 680, 529], "medical", ["medical"], 2), ([733, 557], "pole", ["object"], 1),
    ([806, 754], "object", ["object"], 1), ([755, 807], "antenna", ["electronics"], 2), ([753], "radiator", ["home"], 1),
    ([599], "honeycomb", ["nature"], 2), ([786, 816], "sewing", ["object"], 1), ([458, 455, 464], "object", ["object"], 1),
    ([421, 877], "object", ["object"], 1), ([808], "hat", ["clothing"], 2), ([771, 695, 507], "lock", ["object"], 1),
    ([844, 626, 644], "object", ["object"], 1), ([398], "abacus", ["object"], 1), ([608], "jeans", ["clothing"], 2),
]

# Classes that describe a texture or an ambiguous detail rather than what a photo shows.
IGNORE = [488, 506, 553, 584, 591, 597, 606, 613, 615, 616, 621, 623, 640, 648, 650, 653, 666, 674, 676, 677, 692,
          693, 696, 700, 708, 723, 726, 728, 739, 758, 772, 781, 783, 800, 801, 804, 843, 855, 868, 885, 886, 902,
          911, 999, 434, 473, 478, 480, 481, 512, 517, 519, 523, 533, 556, 589]


def main():
    labels = [l.rstrip("\n") for l in Path(sys.argv[1]).read_text().splitlines()]
    if len(labels) == 1001 and labels[0] == "background":
        labels = labels[1:]
    assert len(labels) == 1000
    rules, see = {}, {}
    for ids, label, cats, prio in GROUPS:
        head = None
        for i in ids:
            if i in rules or i in see:  # the first group that names a class wins
                continue
            if head is None:
                head = i
                rules[i] = (label, cats, prio)
            else:
                see[i] = head  # same rule as the group's first class
    ignored = [i for i in IGNORE if i not in rules and i not in see]
    missing = [i for i in range(1000) if i not in rules and i not in see and i not in ignored]
    lines = ["# ferrovision's default label rules for ImageNet-1k (made by scripts/gen_default_rules.py).",
             "# key: 0-based ImageNet-1k class id (torchvision / Keras order; TF-slim's 1001-class models add 1)",
             "# name: the class (for people); label: the word to search for; probabilities of classes that",
             "# share a label add up; threshold: minimum summed probability; priority: higher first;",
             "# see: use another class's rule; ignore: never a label.",
             "default_threshold: 0.1", "rules:"]
    for i in range(1000):
        name = labels[i].split(",")[0].replace('"', "'")
        if i in rules:
            label, cats, prio = rules[i]
            lines.append(f'  {i}: {{name: "{name}", label: "{label}", priority: {prio}, categories: [{", ".join(cats)}]}}')
        elif i in see:
            lines.append(f'  {i}: {{name: "{name}", see: {see[i]}}}')
        elif i in ignored:
            lines.append(f'  {i}: {{name: "{name}", ignore: true}}')
        else:
            lines.append(f'  {i}: {{name: "{name}", label: "{name.lower()}", priority: 1, categories: [object]}}')
    out = Path(__file__).resolve().parents[1] / "rules" / "imagenet1k.yaml"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}: {len(rules)} rules, {len(see)} aliases, {len(ignored)} ignored, "
          f"{len(missing)} labelled by their own name: {missing}")


if __name__ == "__main__":
    main()
