/* epoll-echo: the baseline coserve's raw echo is measured against.
 *
 * Single-threaded, level-triggered epoll TCP echo server on 127.0.0.1.
 * Usage: epoll-echo [PORT]   (0 or absent: the kernel picks; the bound port is printed on stdout)
 *
 * Memory model, chosen to be a fair reference for the idle-connection test: all reads go into
 * one shared buffer and are written back at once; a connection owns heap memory only while
 * the peer is not reading fast enough (the unsent tail of a partial write). While a tail is
 * pending the connection stops reading, so a slow reader cannot make us buffer without bound.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum { READ_BUF = 64 * 1024, MAX_EVENTS = 256 };

struct conn {
  int fd;
  char *pending; /* unsent bytes of the last read, NULL when none */
  size_t len, off;
};

static int epfd;
static char rbuf[READ_BUF];

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void watch(struct conn *c, int op, unsigned events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void drop(struct conn *c) {
  close(c->fd); /* closing also removes it from the epoll set */
  free(c->pending);
  free(c);
}

/* Sends as much of buf as the socket takes. Returns bytes sent, or -1 if the connection died. */
static ssize_t send_some(int fd, const char *buf, size_t len) {
  size_t sent = 0;
  while (sent < len) {
    ssize_t n = send(fd, buf + sent, len - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      return -1;
    }
  }
  return (ssize_t)sent;
}

static void on_readable(struct conn *c) {
  /* Bounded loop so one busy connection cannot starve the others under level triggering. */
  for (int round = 0; round < 16; ++round) {
    ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (n == 0) {
      drop(c);
      return;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      drop(c);
      return;
    }
    ssize_t sent = send_some(c->fd, rbuf, (size_t)n);
    if (sent < 0) {
      drop(c);
      return;
    }
    if (sent < n) {
      /* Keep the tail and stop reading until the peer drains it. */
      c->len = (size_t)(n - sent);
      c->off = 0;
      c->pending = malloc(c->len);
      if (!c->pending) die("malloc");
      memcpy(c->pending, rbuf + sent, c->len);
      watch(c, EPOLL_CTL_MOD, EPOLLOUT);
      return;
    }
    /* A short read almost always means the socket is drained; level triggering reports it
     * again if not, and skipping the extra recv that would return EAGAIN saves a syscall. */
    if ((size_t)n < sizeof rbuf) return;
  }
}

static void on_writable(struct conn *c) {
  ssize_t sent = send_some(c->fd, c->pending + c->off, c->len - c->off);
  if (sent < 0) {
    drop(c);
    return;
  }
  c->off += (size_t)sent;
  if (c->off == c->len) {
    free(c->pending);
    c->pending = NULL;
    watch(c, EPOLL_CTL_MOD, EPOLLIN);
  }
}

static void on_accept(int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      /* EMFILE and friends: report and let the backlog hold the rest until fds free up. */
      perror("accept4");
      return;
    }
    /* Echo replies are written at once; Nagle would only add latency to split messages. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    if (!c) die("calloc");
    c->fd = fd;
    watch(c, EPOLL_CTL_ADD, EPOLLIN);
  }
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  if (port < 0 || port > 65535) {
    fprintf(stderr, "usage: epoll-echo [PORT]\n");
    return 2;
  }

  /* The idle test holds 10 000+ sockets: use the whole hard limit. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((unsigned short)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(lfd, SOMAXCONN) < 0) die("listen");
  socklen_t alen = sizeof addr;
  if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) die("getsockname");
  printf("%d\n", ntohs(addr.sin_port));
  fflush(stdout);

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");
  /* The listener is the only entry with a NULL pointer. */
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl");

  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      struct conn *c = events[i].data.ptr;
      if (!c) {
        on_accept(lfd);
      } else if (c->pending) {
        /* Errors and hang-ups surface as a failed send. */
        on_writable(c);
      } else {
        on_readable(c);
      }
    }
  }
}
