#include "common/comm/mpi_util.h"

#include <string>

namespace polis::comm {

Status MpiStatus(int rc, const char* expr, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return RemoteError("{} failed at {}:{}: {}", expr, file, line, std::string(text, len));
}

}  // namespace polis::comm
