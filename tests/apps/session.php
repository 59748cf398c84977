<?php
// A web application that keeps per-user state on its own server (PHP's
// file sessions, in a directory of this backend's own): the kind of
// application cookie persistence exists for. Answers one line:
//   server=<backend> user=<login> n=<requests in this session> lb_cookie=<seen|none> xff=<X-Forwarded-For>
//   proto=<X-Forwarded-Proto>
session_start();
if (!isset($_SESSION['user'])) {
    $_SESSION['user'] = $_GET['login'] ?? 'anonymous';
}
$_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
header('Content-Type: text/plain');
$name = getenv('LB_COOKIE') ?: 'SRVID';
printf(
    "server=%s user=%s n=%d lb_cookie=%s xff=%s proto=%s\n",
    getenv('BACKEND_NAME'),
    $_SESSION['user'],
    $_SESSION['n'],
    isset($_COOKIE[$name]) ? 'seen' : 'none',
    $_SERVER['HTTP_X_FORWARDED_FOR'] ?? '-',
    $_SERVER['HTTP_X_FORWARDED_PROTO'] ?? '-'
);
