"""The 1000 ImageNet classes in 58 hand-made groups of related classes (the bridge's space).

Class indices are positions in ImageNet-1000's standard order (SoundNet's ``objects.txt`` and
EfficientNet-Lite0's classifier), written as space-separated indices and inclusive ranges
(``"0-6 389-397"``). How the groups were drawn is in :mod:`avsearch.encoders.bridge`; every
class is in exactly one group (checked on import by :func:`membership` and in
``tests/encoders/test_bridge.py``).

The animal classes (0-397) come in WordNet order, so their groups are mostly index ranges; the
objects (398-999) come in alphabetical order, so their groups are hand-picked lists.
"""

from __future__ import annotations

__all__ = ["GROUPS", "N_CLASSES", "parse_members"]

N_CLASSES = 1000

# (name, what it holds, member classes)
GROUPS: tuple[tuple[str, str, str], ...] = (
    # ------------------------------------------------------------------ animals (0-397)
    ("fish", "bony and cartilaginous fish", "0-6 389-397"),
    (
        "sea_life",
        "jellyfish, anemones, coral, worms, molluscs, crabs, lobsters, isopod, starfish, "
        "urchin, sea cucumber; whales, dugong, sea lion",
        "107-126 147-150 327-329",
    ),
    ("fowl", "cock, hen, ostrich, grouse, ptarmigan, peacock, quail, partridge", "7-9 80-86"),
    ("songbirds", "finches, junco, bunting, robin, bulbul, jay, magpie, chickadee, ouzel", "10-20"),
    ("raptors_owls", "kite, bald eagle, vulture, great grey owl", "21-24"),
    (
        "parrots_tropical_birds",
        "parrots, coucal, bee eater, hornbill, hummingbird, toucan",
        "87-96",
    ),
    ("waterfowl", "drake, merganser, goose, black swan", "97-100"),
    ("waders_seabirds", "storks, herons, cranes, rails, sandpipers, pelican, penguin", "127-146"),
    ("amphibians", "salamanders, newts, axolotl, frogs", "25-32"),
    ("reptiles", "turtles, lizards, crocodiles, triceratops, snakes", "33-68"),
    (
        "bugs",
        "trilobite, arachnids, centipede, beetles, flies, bees, ants, crickets, mantis, "
        "cicada, dragonflies, butterflies; honeycomb, spider web",
        "69-79 300-326 599 815",
    ),
    ("dogs", "the 118 domestic dog breeds; dogsled, muzzle", "151-268 537 676"),
    ("wild_canids", "wolves, coyote, dingo, dhole, African hunting dog, hyena, foxes", "269-280"),
    ("domestic_cats", "tabby, tiger cat, Persian, Siamese, Egyptian cat", "281-285"),
    ("big_cats", "cougar, lynx, leopard, snow leopard, jaguar, lion, tiger, cheetah", "286-293"),
    ("bears", "brown, black, ice and sloth bear; lesser and giant panda", "294-297 387-388"),
    (
        "small_mammals",
        "echidna, platypus, marsupials, mongoose, meerkat, rabbits, rodents, mustelids, skunk, "
        "badger, armadillo, sloth",
        "102-106 298-299 330-338 356-364",
    ),
    ("equines", "sorrel (horse), zebra; horse cart", "339-340 603"),
    ("pigs", "hog, wild boar, warthog", "341-343"),
    ("cattle", "ox, water buffalo, bison; oxcart", "345-347 690"),
    ("sheep_goats", "ram, bighorn, ibex", "348-350"),
    ("antelopes_camels", "hartebeest, impala, gazelle, Arabian camel, llama", "351-355"),
    ("pachyderms", "tusker, hippopotamus, Indian and African elephant", "101 344 385-386"),
    ("primates", "apes, monkeys, lemurs", "365-384"),
    # ------------------------------------------------------------------ objects (398-999)
    (
        "string_instruments",
        "acoustic guitar, banjo, cello, electric guitar, harp, pick (plectrum), violin",
        "402 420 486 546 594 714 889",
    ),
    ("keyboard_instruments", "accordion, grand piano, organ, upright piano", "401 579 687 881"),
    (
        "woodwind_instruments",
        "bassoon, flute, harmonica, oboe, ocarina, panpipe, sax, whistle",
        "432 558 593 683 684 699 776 902",
    ),
    ("brass_instruments", "cornet, French horn, trombone", "513 566 875"),
    (
        "percussion_instruments",
        "chime, drum, drumstick, gong, maraca, marimba, steel drum",
        "494 541 542 577 641 642 822",
    ),
    (
        "audio_stage",
        "cassette (player), CD player, home theater, iPod, loudspeaker, microphone, radio, "
        "stage, tape player, theater curtain",
        "481 482 485 598 605 632 650 754 819 848 854",
    ),
    (
        "cars",
        "cars, cabs, jeep, limousine, vans, pickup, racer, go-kart, golfcart, RV and car parts "
        "(wheel, mirror, disk brake, grille, odometer, oil filter, seat belt)",
        "407 436 468 475 479 511 535 573 575 581 609 627 654 656 661 675 685 686 717 734 751 "
        "757 785 817",
    ),
    (
        "trucks_machinery",
        "fire engine, garbage, tow and trailer trucks, school bus, trolleybus, amphibian, tank, "
        "half track, crane, forklift, harvester, thresher, tractor, plow, snowplow, lawn mower",
        "408 517 555 561 569 586 595 621 730 779 803 847 856 864 866 867 874",
    ),
    (
        "rail",
        "bullet train, electric and steam locomotive, freight and passenger car, streetcar",
        "466 547 565 705 820 829",
    ),
    (
        "bicycles_carts",
        "tandem, moped, motor scooter, mountain bike, tricycle, unicycle, barrow, jinrikisha, "
        "shopping cart, bobsled, snowmobile",
        "428 444 450 612 665 670 671 791 802 870 880",
    ),
    (
        "aircraft",
        "airliner, airship, balloon, missile, parachute, projectile, space shuttle, warplane, wing",
        "404 405 417 657 701 744 812 895 908",
    ),
    (
        "watercraft",
        "aircraft carrier, canoe, catamaran, container ship, fireboat, gondola, lifeboat, liner, "
        "paddle, paddlewheel, pirate ship, schooner, speedboat, submarine, trimaran, wreck, yawl",
        "403 472 484 510 554 576 625 628 693 694 724 780 814 833 871 913 914",
    ),
    (
        "weapons_armour",
        "rifles, revolver, bow, cannon, armour (breastplate, cuirass, chain mail, "
        "bulletproof vest, pickelhaube, shield), gasmask, guillotine, holster, scabbard",
        "413 456 461 465 471 490 524 570 583 597 715 763 764 777 787",
    ),
    (
        "tools_hardware",
        "hand and power tools, nails, screws, chain, coil, hook, knot, locks, safe, broom, "
        "plunger, mousetrap, potter's wheel, rule, tripod",
        "462 477 488 491 506 507 587 596 600 616 674 677 695 726 731 739 740 769 771 783 784 "
        "792 872",
    ),
    (
        "kitchen",
        "cookware, tableware and kitchen appliances: pots, pans, mugs, plates, cups, spoons, "
        "mortar, toaster, stove, microwave, refrigerator, dishwasher",
        "469 473 499 503 504 505 512 521 534 544 550 567 572 618 647 651 659 666 725 729 760 "
        "766 773 809 813 827 828 849 859 868 891 909 910 923 968",
    ),
    (
        "bottles_containers",
        "bottles, jugs, glasses, bottlecap, bucket, barrels, carton, crate, milk can, packet, "
        "plastic bag, ashcan, hamper, shopping basket, tub, vase",
        "412 427 440 441 455 463 478 519 588 653 692 720 728 737 756 790 876 883 898 899 901 907",
    ),
    ("food_dishes", "prepared food and drinks", "924-935 959-967 969"),
    ("fruit_vegetables", "vegetables, fruit, mushroom", "936-957"),
    (
        "plants_fungi",
        "rapeseed, daisy, lady's slipper, corn, acorn, hip, buckeye, fungi, ear; hay, flowerpot",
        "738 958 984-998",
    ),
    (
        "landscapes",
        "alp, cliff, coral reef, geyser, lakeside, promontory, sandbar, seashore, valley, volcano",
        "970 972-980",
    ),
    (
        "sports",
        "balls, rackets, puck, gym apparatus, barbell, dumbbell, punching bag, helmets, knee pad, "
        "pool table, scoreboard, ski, snorkel, reel, ballplayer, scuba diver",
        "416 422 429 430 518 522 543 560 574 602 615 702 722 736 746 747 752 758 768 781 795 "
        "801 805 852 890 981 983",
    ),
    (
        "toys_fun",
        "carousel, jack-o'-lantern, jigsaw puzzle, joystick, mask, maypole, maze, pinwheel, "
        "swing, teddy, bubble",
        "476 607 611 613 643 645 646 723 843 850 971",
    ),
    (
        "clothing",
        "garments, hats, shoes, ties, wig, uniforms, groom",
        "399 400 411 433 439 443 445 451 452 457 459 474 496 501 502 514 515 529 552 568 578 "
        "601 608 610 614 617 630 638 639 652 655 658 667 689 697 735 770 774 775 793 796 806 "
        "808 824 834 841 842 869 887 903 906 982",
    ),
    (
        "accessories_textiles",
        "backpack, mailbag, buckle, hair slide, necklace, sunglasses, handkerchief, dishrag, "
        "doormat, pillow, quilt, prayer rug, sleeping bag, mosquito net, velvet, wool",
        "414 464 533 539 584 591 636 669 679 721 741 750 797 836 837 885 911",
    ),
    (
        "toiletries_bathroom",
        "bath towel, bathtub, washbasin, toilet seat and tissue, shower curtain, paper towel, "
        "soap dispenser, cosmetics, perfume, sunscreen, swab",
        "434 435 551 585 629 631 700 711 794 804 838 840 861 896 999",
    ),
    (
        "medical_lab",
        "Band Aid, beaker, crutch, medicine chest, neck brace, nipple, oxygen mask, Petri dish, "
        "stethoscope, stretcher, syringe",
        "419 438 523 648 678 680 691 712 823 830 845",
    ),
    (
        "furniture",
        "chairs, bassinet, cradle, crib, four-poster, tables, desk, cabinets, bookcase, "
        "wardrobe, file, fire screen, entertainment center, park bench, studio couch, throne",
        "423 431 453 492 493 495 516 520 526 532 548 553 556 559 564 703 765 831 857 894",
    ),
    (
        "appliances_lighting",
        "electric fan, hand blower, iron, radiator, sewing machine, space heater, vacuum, "
        "washer, switch; candle, lampshade, table lamp, spotlight, torch, lighter, matchstick",
        "470 545 589 606 619 626 644 753 786 811 818 844 846 862 882 897",
    ),
    (
        "electronics",
        "computers, keyboards, mouse, phones, monitor, screen, television, printer, "
        "photocopier, projector, modem, oscilloscope, cameras, lens cap, binoculars, loupe",
        "447 487 508 527 528 590 592 620 622 633 662 664 673 688 713 732 742 745 759 761 782 "
        "810 851 878 916",
    ),
    (
        "stationery_books",
        "abacus, pens, quill, binder, envelope, notebook, letter opener, pencil box and "
        "sharpener, rubber eraser, paintbrush, slide rule, safety pin, spindle, thimble, comic "
        "book, crossword, book jacket, menu",
        "398 418 446 549 563 623 681 696 709 710 749 767 772 798 816 855 917 918 921 922",
    ),
    (
        "clocks_measuring",
        "analog, digital and wall clock, digital watch, stopwatch, hourglass, sundial, "
        "barometer, magnetic compass, scale",
        "409 426 530 531 604 635 778 826 835 892",
    ),
    (
        "buildings",
        "houses, barn, church, mosque, monastery, palace, castle, prison, shops, cinema, "
        "library, restaurant, greenhouse, tents, yurt, towers, monuments, altar, brass (plaque)",
        "406 410 415 424 425 437 442 448 449 454 458 467 483 497 498 500 509 538 580 582 624 "
        "634 649 660 663 668 672 682 698 708 727 743 762 788 832 853 858 860 863 865 873 884 "
        "900 915",
    ),
    (
        "structures_street",
        "bridges, viaduct, pier, dock, breakwater, dam, drilling platform, fences, stone wall, "
        "bannister, sliding door, shoji, windows, patio, fountain, flagpole, pole, radio "
        "telescope, solar dish, gas pump, mailbox, manhole cover, turnstile, umbrella, street "
        "sign, traffic light",
        "421 460 489 525 536 540 557 562 571 637 640 706 716 718 733 755 789 799 807 821 825 "
        "839 877 879 888 904 905 912 919 920",
    ),
    (
        "money_machines",
        "cash machine, parking meter, pay-phone, piggy bank, purse, slot machine, vending "
        "machine, wallet",
        "480 704 707 719 748 800 886 893",
    ),
)


def parse_members(spec: str) -> tuple[int, ...]:
    """``"0-6 389 391-392"`` -> ``(0, 1, ..., 6, 389, 391, 392)``."""
    out: list[int] = []
    for part in spec.split():
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(out)
