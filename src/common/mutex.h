// Mutex and MutexLock: std::mutex and std::lock_guard as capabilities that clang's thread-safety
// analysis understands (libstdc++'s own are not annotated); SharedMutex with ReaderLock and
// WriterLock the same for std::shared_mutex. A member a mutex protects is declared
// FLEETID_GUARDED_BY(mu_); a function that expects the mutex held is FLEETID_REQUIRES(mu_). `make
// lint` compiles every translation unit with -Wthread-safety (clang-tidy 16), so touching a
// guarded member without its lock is a lint failure. Other compilers see no attributes.
#ifndef FLEETID_COMMON_MUTEX_H_
#define FLEETID_COMMON_MUTEX_H_

#include <mutex>
#include <shared_mutex>

#if defined(__clang__)
#define FLEETID_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define FLEETID_THREAD_ANNOTATION(x)
#endif

#define FLEETID_CAPABILITY(name) FLEETID_THREAD_ANNOTATION(capability(name))
#define FLEETID_SCOPED_CAPABILITY FLEETID_THREAD_ANNOTATION(scoped_lockable)
#define FLEETID_GUARDED_BY(mu) FLEETID_THREAD_ANNOTATION(guarded_by(mu))
#define FLEETID_PT_GUARDED_BY(mu) FLEETID_THREAD_ANNOTATION(pt_guarded_by(mu))
#define FLEETID_REQUIRES(...) FLEETID_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define FLEETID_EXCLUDES(...) FLEETID_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define FLEETID_ACQUIRE(...) FLEETID_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define FLEETID_RELEASE(...) FLEETID_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define FLEETID_ACQUIRE_SHARED(...) \
  FLEETID_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define FLEETID_RELEASE_SHARED(...) \
  FLEETID_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
#define FLEETID_RELEASE_GENERIC(...) \
  FLEETID_THREAD_ANNOTATION(release_generic_capability(__VA_ARGS__))
#define FLEETID_RETURN_CAPABILITY(mu) FLEETID_THREAD_ANNOTATION(lock_returned(mu))

namespace fleetid {

// Mutex is a std::mutex the analysis knows as a capability.
class FLEETID_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() FLEETID_ACQUIRE() { mu_.lock(); }
  void unlock() FLEETID_RELEASE() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

// MutexLock holds |mu| for its scope. It is also BasicLockable (lock/unlock of the same mutex),
// so a std::condition_variable_any can wait on it: the wait releases and retakes the mutex
// inside the standard library, where the analysis does not look, and the lock is held again
// when the wait returns.
class FLEETID_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) FLEETID_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() FLEETID_RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void lock() FLEETID_ACQUIRE() { mu_.lock(); }
  void unlock() FLEETID_RELEASE() { mu_.unlock(); }

 private:
  Mutex& mu_;
};

// SharedMutex is a std::shared_mutex the analysis knows as a capability: many readers
// (ReaderLock) or one writer (WriterLock). A member it guards may be read under either lock and
// written only under WriterLock.
class FLEETID_CAPABILITY("mutex") SharedMutex {
 public:
  SharedMutex() = default;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  void lock() FLEETID_ACQUIRE() { mu_.lock(); }
  void unlock() FLEETID_RELEASE() { mu_.unlock(); }
  void lock_shared() FLEETID_ACQUIRE_SHARED() { mu_.lock_shared(); }
  void unlock_shared() FLEETID_RELEASE_SHARED() { mu_.unlock_shared(); }

 private:
  std::shared_mutex mu_;
};

// ReaderLock holds |mu| shared for its scope.
class FLEETID_SCOPED_CAPABILITY ReaderLock {
 public:
  explicit ReaderLock(SharedMutex& mu) FLEETID_ACQUIRE_SHARED(mu) : mu_(mu) { mu_.lock_shared(); }
  ~ReaderLock() FLEETID_RELEASE_GENERIC() { mu_.unlock_shared(); }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  SharedMutex& mu_;
};

// WriterLock holds |mu| exclusively for its scope.
class FLEETID_SCOPED_CAPABILITY WriterLock {
 public:
  explicit WriterLock(SharedMutex& mu) FLEETID_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~WriterLock() FLEETID_RELEASE() { mu_.unlock(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  SharedMutex& mu_;
};

}  // namespace fleetid

#endif  // FLEETID_COMMON_MUTEX_H_
