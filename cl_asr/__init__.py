"""cl_asr: a continual-learning benchmark suite for speech recognition on Whisper."""
import warnings

# avalanche-lib imports qpsolvers (for GEM), which warns on import when no QP solver is installed; no
# strategy here uses it.
warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)

__version__ = "0.1.0"
