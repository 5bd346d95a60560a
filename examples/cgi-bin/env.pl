#!/usr/bin/perl
# Dumps the CGI environment as text/plain, one VAR=value per line, sorted.
use strict;
use warnings;
print "Content-Type: text/plain; charset=utf-8\n\n";
for my $name (sort keys %ENV) {
    print "$name=$ENV{$name}\n";
}
