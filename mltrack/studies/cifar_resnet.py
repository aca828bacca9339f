"""The seed-004 ResNet50 for 32×32 images (SahilNokhwal/annt, ``ResNet50/main_resnet50_*.py``).

Not torchvision's ImageNet ResNet50: the stem is one 3×3 convolution with stride 1 (then
BatchNorm and ReLU) and there is no max-pool, so a 32×32 image keeps its resolution through
the first stage and reaches the last stage at 4×4, which a 4×4 average pool reduces to one
vector. The stages are torchvision's Bottleneck design (1×1 reduce, 3×3, 1×1 expand by 4, a
projection shortcut where the shape changes) repeated [3, 4, 6, 3] times with 64, 128, 256,
512 planes, the first stage at stride 1 and the others at stride 2. Weights use PyTorch's
default initialisation, as in the seed (trained from scratch).

About 1.3 G multiply-adds (2.6 GFLOP as ``FlopCounterMode`` counts) per 32×32 image forward,
about 16 times torchvision's ResNet50 at that size: a CPU trains it slowly (0.35 s an image,
forward and backward, on this project's 2-core VM); the seed's runs were on a GPU.
"""

from __future__ import annotations

from torch import Tensor, nn

EXPANSION = 4
BLOCKS = (3, 4, 6, 3)
PLANES = (64, 128, 256, 512)


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    ]


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        c_out = planes * EXPANSION
        self.body = nn.Sequential(
            *conv_bn(c_in, planes, 1),
            nn.ReLU(inplace=True),
            *conv_bn(planes, planes, 3, stride),
            nn.ReLU(inplace=True),
            *conv_bn(planes, c_out, 1),
        )
        projected = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(*conv_bn(c_in, c_out, 1, stride)) if projected else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.body(x) + identity)


class CifarResNet50(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 64, 3), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        c_in = 64
        for i, (blocks, planes) in enumerate(zip(BLOCKS, PLANES, strict=True)):
            layers = []
            for j in range(blocks):
                layers.append(Bottleneck(c_in, planes, 2 if i > 0 and j == 0 else 1))
                c_in = planes * EXPANSION
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AvgPool2d(4)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(x.flatten(1))
