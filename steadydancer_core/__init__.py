"""SteadyDancer in pure PyTorch: DiT, encoders, VAE, sampler, offloading. Never imports ComfyUI.

The names below are the public API, kept stable; the nodes, the CLI, the scripts and the benchmarks use only these.
The modules behind them follow the data flow and may change:

    models/    the networks and their configs (DiT with SSAR / TMCM / FAAU, Wan VAE, umT5, CLIP vision)
    loading/   files -> models: readers, GGUF codecs, quantised ops, key-name tables, identify, loaders, LoRA
    runtime/   a loaded SteadyDancerModel: the loader's options, memory planner, every device movement
    sampling/  the sampler's options, schedules, guidance, conditioning, segments, generate / decode; it uses a
               model through ``SamplingModel`` (``sampling/model_interface.py``) and imports only models/ and option.py

Typical use::

    import steadydancer_core as sd
    files = sd.ModelFiles(dit=..., vae=..., t5=..., clip_vision=...)
    model = sd.load_model(files, sd.LoaderSettings(offload="auto"))
    result = sd.generate(model, photo, positive_pose, negative_pose, sd.GenerationSettings(prompt="a dancer"))
    video = sd.decode(model, result)          # or: for start, frames in sd.iter_decoded(model, result): ...

Every option (name, default, range, help) is a row of an ``OptionTable``: ``SAMPLER`` / ``VAE_TILING`` (the fields
of ``GenerationSettings``), ``LOADER`` (``LoaderSettings``), ``PHOTO``; the nodes' other tables are in
``option_tables``.
"""
from .loading.errors import StateDictMismatchError, WeightFileError
from .loading.file_writers import save_gguf, to_comfy_quant, to_fp8
from .loading.finite import nonfinite
from .loading.identify import identify_component
from .loading.loaders import load_dit, load_image_encoder, load_text_encoder, load_vae
from .loading.lora import LoraReport
from .loading.quant_ops import set_fp8_matmul
from .loading.random_weights import random_dit
from .loading.state_dict import empty_init, load_state_dict_into
from .model_files import (
                                CONTROLNET_AUX_DWPOSE_DIRS,
                                CONTROLNET_AUX_PACK,
                                DWPOSE_FOLDER,
                                MODEL_FILE_TABLE,
                                MODEL_ROLES,
                                STEADYDANCER_FOLDER,
                                ModelFileInfo,
                                ModelRole,
                                extra_model_paths_yaml,
                                model_file_info,
                                model_files_for,
                                model_folders,
                                model_role_tooltip,
                                preferred_file_name,
                                render_model_table,
)
from .models.attention import BACKENDS as ATTENTION_BACKENDS
from .models.attention import AttentionBackendError
from .models.sequence_parallel import LoopbackSequenceParallel, valid_sequence_degrees
from .models.dit import SteadyDancerDiT
from .models.dit_config import DiTConfig
from .models.image_encoder import ImageEncoder
from .models.image_encoder_config import CLIPVisionConfig
from .models.text_encoder import TextEncoder
from .models.text_encoder_config import T5Config
from .models.vae import WanVAE, from_raw_latent, to_raw_latent
from .models.vae_config import VAE_SPATIAL_STRIDE, VAE_TEMPORAL_STRIDE, VAEConfig
from .models.vae_tiling import TilePlan, plan_tiles
from .driving import DrivingPoses, expected_frames, extract_driving_poses, extract_poses, pick_frames
from .option import Option, OptionError, OptionTable
from .runtime.bundle import SteadyDancerModel, check_model_files, load_model
from .runtime.options import (
                                AUTO_PRECISION,
                                LOADER,
                                LORA_STRENGTH,
                                OFFLOAD_MODES,
                                PRECISION_CHOICES,
                                PRECISIONS,
                                LoaderSettings,
                                ModelFiles,
)
from .runtime.compile import compile_blocks
from .runtime.describe import describe_model, weights_format
from .runtime.memory_plan import (
                                JobShape,
                                MemoryPlan,
                                ModelSizes,
                                OffloadRequest,
                                RankShare,
                                format_size,
                                plan_memory,
)
from .runtime.parallel import (
                                GUIDANCE_DEGREES,
                                ParallelConfig,
                                ParallelRuntime,
                                RankFailedError,
                                init_parallel,
                                parallel_process_group,
)
from .runtime.parallel_options import PARALLEL, parallel_config
from .runtime.launch import FrameCount, launched_world_size, start_process_group
from .runtime.offload import (
                                Offloader,
                                book_on_device,
                                SteadyDancerOutOfMemoryError,
                                component_device_bytes,
                                component_footprint,
                                load_component,
                                release_model,
                                unload_component,
)
from .runtime.placement import COMPONENTS, VRAM_MODES, DevicePolicy
from .runtime.sizes import dit_tokens, module_bytes
from .sampling.conditioning import as_frames as check_frames
from .sampling.conditioning import resize_like_pil
from .sampling.defaults import (
                                FIRST_FRAME_MODES,
                                POSE_RESIZE_MODES,
                                SOLVERS,
                                STEP_CACHE_MODES,
                                TILING_MODES,
                                WAN_FPS,
)
from .sampling.decoded_store import DecodedSegments
from .sampling.guidance import Cancelled, NonFiniteLatentError
from .sampling.guidance_parallel import busiest_group_passes
from .sampling.noise import NOISE_SOURCES
from .sampling.model_interface import JobPlan, SamplingModel
from .sampling.options import MAX_SEED, PHOTO, SAMPLER, VAE_TILING
from .sampling.photo import BACKGROUNDS, background_name, composite_photo, parse_background
from .sampling.pipeline import generate
from .sampling.results import GenerationResult, SegmentLatent, decode, iter_decoded
from .sampling.settings import GenerationSettings
from .sampling.progress import Progress, format_seconds
from .sampling.pose_source import PoseFrames, TensorPoseFrames, as_pose_frames
from .sampling.segments import plan_segments, resolve_length
from .image_io import ImageReadError
from .quality import (
                                QualityReport,
                                QualitySettings,
                                StartGap,
                                clip_embedder,
                                compare_reports,
                                quality_report,
                                report_paths,
                                start_gap,
                                write_report,
)
from .workers import WorkerError, WorkerModel
from .video_io import (
                                FPS_RANGE,
                                VideoReadError,
                                VideoWriteError,
                                VideoWriter,
                                check_fps,
                                frames_to_uint8,
                                iter_pose_frames,
                                iter_video_frames,
                                probe_video,
                                read_audio,
                                resample_indices,
                                write_video,
)

__all__ = [
    "ATTENTION_BACKENDS", "CLIPVisionConfig", "Cancelled", "DiTConfig", "GenerationResult", "GenerationSettings",
    "ImageEncoder", "JobShape", "LoraReport", "MemoryPlan", "ModelSizes", "OffloadRequest", "PRECISIONS",
    "SegmentLatent", "StateDictMismatchError", "SteadyDancerDiT", "SteadyDancerModel",
    "SteadyDancerOutOfMemoryError", "T5Config", "TextEncoder", "VAEConfig", "WanVAE", "WeightFileError", "decode",
    "generate", "iter_decoded", "load_dit", "load_image_encoder", "load_model", "load_text_encoder", "load_vae",
    "plan_memory", "plan_segments", "release_model", "resolve_length",
    # placement: devices and free memory from a host, and the calls its model management makes
    "AUTO_PRECISION", "COMPONENTS", "DevicePolicy", "PRECISION_CHOICES", "VRAM_MODES", "component_device_bytes",
    "LoaderSettings", "ModelFiles", "SamplingModel", "JobPlan", "check_model_files",
    # the driving video's poses, with ExtractPose's defaults
    "DrivingPoses", "expected_frames", "extract_driving_poses", "extract_poses", "pick_frames",
    "component_footprint", "load_component", "unload_component",
    "VideoReadError", "VideoWriteError", "VideoWriter", "frames_to_uint8", "iter_video_frames", "probe_video",
    "read_audio", "resample_indices", "write_video",
    # hostile-input limits: frame rates, pose frames decoded small, photos checked before decoding
    "FPS_RANGE", "check_fps", "iter_pose_frames", "ImageReadError", "nonfinite",
    # the reports' words: what a loaded model is, byte sizes as the reports write them
    "describe_model", "format_size", "weights_format",
    # the latent conventions: normalised (the DiT's) <-> raw (ComfyUI's LATENT "samples", its VAE Decode)
    "from_raw_latent", "to_raw_latent",
    # the option tables (every option's name, default, range and help) and their vocabularies
    "Option", "OptionError", "OptionTable", "LOADER", "LORA_STRENGTH", "SAMPLER", "VAE_TILING", "MAX_SEED",
    "FIRST_FRAME_MODES", "NOISE_SOURCES", "OFFLOAD_MODES", "SOLVERS", "STEP_CACHE_MODES", "TILING_MODES", "WAN_FPS",
    "NonFiniteLatentError", "AttentionBackendError", "check_frames", "identify_component", "resize_like_pil", "POSE_RESIZE_MODES",
    # a photo with transparency
    "BACKGROUNDS", "PHOTO", "background_name", "composite_photo", "parse_background",
    # whole-job progress reports and the decoded segments a result keeps on disk
    "Progress", "format_seconds", "DecodedSegments",
    # pose frame sources read one segment at a time by generate()
    "PoseFrames", "TensorPoseFrames", "as_pose_frames",
    # building blocks for component benchmarks and tools
    "Offloader", "TilePlan", "VAE_SPATIAL_STRIDE", "VAE_TEMPORAL_STRIDE", "compile_blocks", "dit_tokens",
    "empty_init", "load_state_dict_into", "module_bytes", "plan_tiles", "random_dit", "save_gguf", "set_fp8_matmul", "to_comfy_quant",
    "to_fp8",
    # the model file table: names, folders, sizes, sources (the CLI's --models lookup, the tiny kit, the workflows,
    # the loader's lists and the documentation are derived from it)
    "CONTROLNET_AUX_DWPOSE_DIRS", "CONTROLNET_AUX_PACK", "DWPOSE_FOLDER", "MODEL_FILE_TABLE", "MODEL_ROLES",
    "STEADYDANCER_FOLDER", "ModelFileInfo", "ModelRole", "extra_model_paths_yaml", "model_file_info",
    "model_files_for", "model_folders", "model_role_tooltip", "preferred_file_name", "render_model_table",
    # quality report of a result: measures, JSON + picture beside the video, comparison of several runs
    "QualityReport", "QualitySettings", "StartGap", "clip_embedder", "compare_reports", "quality_report",
    "report_paths", "start_gap", "write_report",
    # one clip on several processes (GPUs): layout, process groups, each rank's share
    "GUIDANCE_DEGREES", "ParallelConfig", "ParallelRuntime", "RankFailedError", "RankShare", "busiest_group_passes",
    "init_parallel", "parallel_process_group", "valid_sequence_degrees", "LoopbackSequenceParallel",
    # starting it: the options (node, CLI, API), torchrun's process group
    "PARALLEL", "FrameCount", "book_on_device", "parallel_config", "launched_world_size", "start_process_group",
    # the same from one process (ComfyUI): worker processes that keep the model loaded between jobs
    "WorkerError", "WorkerModel",
]
