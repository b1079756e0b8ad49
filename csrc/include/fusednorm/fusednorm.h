// Everything a C++ user of fusednorm needs: #include <fusednorm/fusednorm.h>.
#pragma once

#include "activation.h"
#include "modules.h"
#include "ops.h"
