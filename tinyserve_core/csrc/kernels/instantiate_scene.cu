// Compile-check unit for CI: the scene frame kernel (defined in the header), without torch.
#include "scene_frame.cuh"
