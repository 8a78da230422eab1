"""Log parsing of benchmarks/vs_yolov5.py on YOLOv5-format progress and speed lines."""
from benchmarks.vs_yolov5 import epoch_seconds, speed_ms

LOG = (
    "train: Caching images (0.1GB ram): 100%|██████████| 1042/1042 [00:03<00:00, 300.1it/s]\n"
    "      Epoch    GPU_mem   box_loss   obj_loss   cls_loss  Instances       Size\n"
    "        0/0         0G     0.1196    0.01473    0.04265         16        320:  50%|█████     | 33/66 [00:58<00:58,  1.80s/it]\r"
    "        0/0         0G     0.1196    0.01473    0.04265          2        320: 100%|██████████| 66/66 [01:58<00:00,  1.80s/it]\n"
    "                 Class     Images  Instances          P          R      mAP50   mAP50-95: 100%|██████████| 6/6 [00:08<00:00,  1.41s/it]\n"
    "Speed: 0.3ms pre-process, 12.5ms inference, 1.3ms NMS per image at shape (32, 3, 320, 320)\n"
)


def test_epoch_seconds_reads_the_finished_training_bar_only():
    assert epoch_seconds(LOG) == 118  # 01:58, not the caching (3 s) or validation (8 s) bar


def test_speed_line():
    assert speed_ms(LOG) == (0.3, 12.5, 1.3)
