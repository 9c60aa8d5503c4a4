module emailplan.local/sesstub

go 1.22
