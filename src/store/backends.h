// Internal: the backend constructors behind Database::Open.
#ifndef FLEETID_STORE_BACKENDS_H_
#define FLEETID_STORE_BACKENDS_H_

#include <memory>
#include <string_view>

#include "store/store.h"

namespace fleetid::store::internal {

[[nodiscard]] Result<std::unique_ptr<Database>> OpenSqlite(std::string_view path_and_options,
                                                           int pool_size);
[[nodiscard]] Result<std::unique_ptr<Database>> OpenPostgres(std::string_view url, int pool_size);

}  // namespace fleetid::store::internal

#endif  // FLEETID_STORE_BACKENDS_H_
