<?php
// Echoes the Cookie header exactly as this backend received it, hex-encoded
// (its bytes need not be ASCII):  cookie=<hex>
header('Content-Type: text/plain');
printf("cookie=%s\n", bin2hex($_SERVER['HTTP_COOKIE'] ?? ''));
