// Everything a C++ user of fusednorm needs: #include <fusednorm/fusednorm.h>.
#pragma once

#include "ops.h"
