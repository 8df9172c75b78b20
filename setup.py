"""Install rwf-render. See README.md: the quickstart installs the CPU build of torch first (scripts/install.sh);
GPU users install their CUDA build of torch beforehand and keep it, since only a version range is asked for here."""

from setuptools import setup

LINUX_X86 = "platform_system == 'Linux' and platform_machine == 'x86_64'"

setup(
    name="rwf-render",
    version="0.1.0",
    description="Neural fields with Fourier features and randomly factorized linear layers: images, SDFs, NeRF",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=["rwf_render", "rwf_render.raymarch", "scenes", "data_tools", "viewer"],
    package_data={"rwf_render.raymarch": ["csrc/*.h", "csrc/*.cpp", "csrc/*.cu"]},
    install_requires=[
        "torch>=2.4,<2.15",  # a range, so a CUDA torch installed beforehand is kept (2.4: fused Adam on a CPU)
        "numpy",
        "imageio>=2.28",
        "pillow",
        "pypng",  # 16-bit RGB(A) PNG: imageio's Pillow plugin silently reduces it to 8 bits
        "tifffile",
        "OpenEXR>=3.3",
        "scipy",
        "scikit-image>=0.21",  # marching cubes, SSIM, the built-in photos
        "trimesh>=4",
        f"open3d-cpu>=0.18; {LINUX_X86}",  # same API as open3d, 105 MB instead of 400 MB
        "open3d>=0.18; platform_system != 'Linux' or platform_machine != 'x86_64'",
        "tqdm",
        "matplotlib",
        "ninja",  # builds the ray marcher's C++/CUDA extension
        "viser>=1.0",  # rwf view, rwf fit --view (its web client is bundled: works offline)
    ],
    extras_require={
        "dev": ["pytest"],
        "sfm": ["pycolmap>=3.10"],  # rwf data photos: structure from motion
        "video": ["imageio-ffmpeg"],  # rwf data photos --video, rwf render --video
        "all": ["pytest", "pycolmap>=3.10", "imageio-ffmpeg"],
    },
    entry_points={
        "console_scripts": ["rwf = rwf_render.cli:console"],
        "rwf_render.commands": ["data = data_tools.cli:register", "view = viewer.cli:register"],
        "rwf_render.live": ["viewer = viewer.live:make_callback"],
        "rwf_render.scenes": ["presets = scenes:presets"],
    },
)
