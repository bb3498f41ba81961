#include "blip2_kernels.h"
